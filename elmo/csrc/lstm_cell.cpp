// The elementwise tail of ELMo's LSTM step, fused into one pass over memory (inference only). The gate bias is
// added here, not by the input GEMM: a bias broadcast into the (2, N, 4D) input part costs a write and a read of
// the whole tensor (the input part of a pass on `original` took 1.40 s with it, 1.24 s without), here 4D values
// per row, read from cache.
//
// Eager PyTorch runs the tail as ~10 separate elementwise kernels, each reading and writing the whole
// (2, n, 4D) gate tensor; at the step shapes of the published models that is 10-40% of a step. Here every
// element is read once and the two results written once. The arithmetic is the same as elmo/model.py's eager
// step (TensorFlow LSTMCell gate order i, j, f, o; forget bias already in the gate bias):
//   [i | j | f | o] = h @ W_h + x @ W_x + bias
//   c = sigmoid(i) * tanh(j) + sigmoid(f) * c_prev, clipped to [-clip, clip] when clip > 0
//   h_in = sigmoid(o) * tanh(c)           (the input of the projection GEMM, which stays in PyTorch)
// with ATen's vectorized exp (SLEEF, 1 ulp) and a tanh built on it (below). Each row is computed on its own with the same vector code for every
// element (the remainder too), so a row's bits never depend on the rows around it (the bit-exact mode).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <tuple>

namespace {

using at::vec::Vectorized;

template <typename T>
inline Vectorized<T> sigmoid(const Vectorized<T>& x) {
  const Vectorized<T> one(T(1));
  return (one + x.neg().exp()).reciprocal();
}

// tanh(x) = 1 - 2 / (1 + exp(2x)). SLEEF's vector tanh (and expm1) cost 4x its exp and dominated the tail; this
// form costs one exp and one division, at an absolute error of a few ulp of 1 (relative error grows only for
// |x| far below 1, where the cell's other terms are larger anyway).
template <typename T>
inline Vectorized<T> tanh(const Vectorized<T>& x) {
  const Vectorized<T> one(T(1)), two(T(2));
  return one - two / (one + (two * x).exp());
}

// One row: gates, x_part, bias (4D,) [i | j | f | o], c_prev (D,) -> cell, h_in (D,).
template <typename T>
void cell_row(const T* gates, const T* x_part, const T* bias, const T* c_prev, T* cell, T* h_in, int64_t d, T clip) {
  using Vec = Vectorized<T>;
  const int64_t width = Vec::size();
  const Vec upper(clip), lower(-clip);
  for (int64_t k = 0; k < d; k += width) {
    const int count = static_cast<int>(std::min<int64_t>(width, d - k));
    auto gate = [&](int64_t block) {  // h @ W_h + x @ W_x + bias of gate block i, j, f or o
      return Vec::loadu(gates + block * d + k, count) + Vec::loadu(x_part + block * d + k, count) +
             Vec::loadu(bias + block * d + k, count);
    };
    const Vec i = sigmoid(gate(0));
    const Vec j = tanh(gate(1));
    const Vec f = sigmoid(gate(2));
    const Vec o = sigmoid(gate(3));
    Vec c = i * j + f * Vec::loadu(c_prev + k, count);
    if (clip > T(0)) {
      c = at::vec::clamp(c, lower, upper);
    }
    c.store(cell + k, count);
    (o * tanh(c)).store(h_in + k, count);
  }
}

// The bf16 mode's row: gates and x_part (4D,) bfloat16 (the two GEMM results, rounded once each by their GEMM),
// bias (4D,) float32, c_prev (D,) float32 -> cell (D,) float32, h_in (D,) bfloat16 (the projection GEMM's operand).
// The gate sum, the nonlinearities and the cell run in float32, as in the eager bf16 step; 2 * (float lanes)
// elements per iteration (one bfloat16 vector), the remainder with the same code on partial loads.
void cell_row_bf16(const at::BFloat16* gates, const at::BFloat16* x_part, const float* bias, const float* c_prev,
                   float* cell, at::BFloat16* h_in, int64_t d, float clip) {
  using Vec = Vectorized<float>;
  using Half = Vectorized<at::BFloat16>;
  const int64_t lanes = Vec::size(), width = Half::size();  // width == 2 * lanes
  const Vec upper(clip), lower(-clip);
  for (int64_t k = 0; k < d; k += width) {
    const int count = static_cast<int>(std::min<int64_t>(width, d - k));
    const int counts[2] = {static_cast<int>(std::min<int64_t>(lanes, count)),
                           static_cast<int>(std::max<int64_t>(0, count - lanes))};
    Vec gate[4][2];
    for (int64_t block = 0; block < 4; ++block) {  // h @ W_h + x @ W_x + bias of gate block i, j, f or o
      auto [g0, g1] = at::vec::convert_to_float<at::BFloat16>(Half::loadu(gates + block * d + k, count));
      auto [x0, x1] = at::vec::convert_to_float<at::BFloat16>(Half::loadu(x_part + block * d + k, count));
      gate[block][0] = g0 + x0 + Vec::loadu(bias + block * d + k, counts[0]);
      gate[block][1] = g1 + x1 + Vec::loadu(bias + block * d + k + lanes, counts[1]);
    }
    Vec h[2];
    for (int half = 0; half < 2; ++half) {
      Vec c = sigmoid(gate[0][half]) * tanh(gate[1][half]) +
              sigmoid(gate[2][half]) * Vec::loadu(c_prev + k + half * lanes, counts[half]);
      if (clip > 0.0f) {
        c = at::vec::clamp(c, lower, upper);
      }
      c.store(cell + k + half * lanes, counts[half]);
      h[half] = sigmoid(gate[3][half]) * tanh(c);
    }
    at::vec::convert_from_float<at::BFloat16>(h[0], h[1]).store(h_in + k, count);
  }
}

// gates (2, n, 4D) contiguous; x_part (2, n, 4D) and c_prev (2, n, D) with unit stride in the last dimension;
// bias (2, 4D) contiguous. -> cell (2, n, D), h_in (2, n, D), both new and contiguous.
std::tuple<at::Tensor, at::Tensor> lstm_cell_tail(const at::Tensor& gates, const at::Tensor& x_part,
                                                  const at::Tensor& bias, const at::Tensor& c_prev, double clip) {
  TORCH_CHECK(gates.device().is_cpu(), "lstm_cell_tail: CPU tensors only");
  TORCH_CHECK(gates.dim() == 3 && gates.is_contiguous(), "lstm_cell_tail: gates must be contiguous (2, n, 4D)");
  TORCH_CHECK(x_part.sizes() == gates.sizes() && x_part.stride(2) == 1, "lstm_cell_tail: x_part shape/stride");
  const int64_t rows = gates.size(1), d = gates.size(2) / 4;
  TORCH_CHECK(gates.size(2) == 4 * d, "lstm_cell_tail: gate width must be 4D");
  TORCH_CHECK(c_prev.dim() == 3 && c_prev.size(0) == gates.size(0) && c_prev.size(1) == rows &&
                  c_prev.size(2) == d && c_prev.stride(2) == 1,
              "lstm_cell_tail: c_prev must be (2, n, D) with unit last stride");
  TORCH_CHECK(bias.is_contiguous() && bias.numel() == gates.size(0) * 4 * d, "lstm_cell_tail: bias must be (2, 4D)");
  TORCH_CHECK(x_part.scalar_type() == gates.scalar_type() && c_prev.scalar_type() == gates.scalar_type() &&
                  bias.scalar_type() == gates.scalar_type(),
              "lstm_cell_tail: one dtype for all inputs");
  auto cell = at::empty(c_prev.sizes(), c_prev.options().memory_format(at::MemoryFormat::Contiguous));
  auto h_in = at::empty_like(cell);
  const int64_t directions = gates.size(0), all_rows = directions * rows;
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(d, 1));
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_cell_tail", [&] {
    const scalar_t* g = gates.const_data_ptr<scalar_t>();
    const scalar_t* x = x_part.const_data_ptr<scalar_t>();
    const scalar_t* b = bias.const_data_ptr<scalar_t>();
    const scalar_t* c = c_prev.const_data_ptr<scalar_t>();
    scalar_t* out_c = cell.mutable_data_ptr<scalar_t>();
    scalar_t* out_h = h_in.mutable_data_ptr<scalar_t>();
    const auto xs = x_part.strides();
    const auto cs = c_prev.strides();
    const auto clip_value = static_cast<scalar_t>(clip);
    at::parallel_for(0, all_rows, grain, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t dir = r / rows, row = r % rows;
        cell_row<scalar_t>(g + r * 4 * d, x + dir * xs[0] + row * xs[1], b + dir * 4 * d,
                           c + dir * cs[0] + row * cs[1], out_c + r * d, out_h + r * d, d, clip_value);
      }
    });
  });
  return {cell, h_in};
}

// The bf16 mode's tail: gates (2, n, 4D) bfloat16 contiguous, x_part (2, n, 4D) bfloat16 with unit last stride,
// bias (2, 4D) float32 contiguous, c_prev (2, n, D) float32 with unit last stride
// -> cell (2, n, D) float32, h_in (2, n, D) bfloat16, both new and contiguous.
std::tuple<at::Tensor, at::Tensor> lstm_cell_tail_bf16(const at::Tensor& gates, const at::Tensor& x_part,
                                                       const at::Tensor& bias, const at::Tensor& c_prev,
                                                       double clip) {
  TORCH_CHECK(gates.device().is_cpu(), "lstm_cell_tail_bf16: CPU tensors only");
  TORCH_CHECK(gates.dim() == 3 && gates.is_contiguous() && gates.scalar_type() == at::kBFloat16,
              "lstm_cell_tail_bf16: gates must be contiguous bfloat16 (2, n, 4D)");
  TORCH_CHECK(x_part.sizes() == gates.sizes() && x_part.stride(2) == 1 && x_part.scalar_type() == at::kBFloat16,
              "lstm_cell_tail_bf16: x_part must be bfloat16 shaped like gates, unit last stride");
  const int64_t directions = gates.size(0), rows = gates.size(1), d = gates.size(2) / 4;
  TORCH_CHECK(gates.size(2) == 4 * d, "lstm_cell_tail_bf16: gate width must be 4D");
  TORCH_CHECK(bias.is_contiguous() && bias.scalar_type() == at::kFloat && bias.numel() == directions * 4 * d,
              "lstm_cell_tail_bf16: bias must be contiguous float32 (2, 4D)");
  TORCH_CHECK(c_prev.dim() == 3 && c_prev.size(0) == directions && c_prev.size(1) == rows && c_prev.size(2) == d &&
                  c_prev.stride(2) == 1 && c_prev.scalar_type() == at::kFloat,
              "lstm_cell_tail_bf16: c_prev must be float32 (2, n, D) with unit last stride");
  auto cell = at::empty(c_prev.sizes(), c_prev.options().memory_format(at::MemoryFormat::Contiguous));
  auto h_in = at::empty(c_prev.sizes(), cell.options().dtype(at::kBFloat16));
  const int64_t all_rows = directions * rows;
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(d, 1));
  const auto* g = gates.const_data_ptr<at::BFloat16>();
  const auto* x = x_part.const_data_ptr<at::BFloat16>();
  const float* b = bias.const_data_ptr<float>();
  const float* c = c_prev.const_data_ptr<float>();
  float* out_c = cell.mutable_data_ptr<float>();
  auto* out_h = h_in.mutable_data_ptr<at::BFloat16>();
  const auto xs = x_part.strides();
  const auto cs = c_prev.strides();
  at::parallel_for(0, all_rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t dir = r / rows, row = r % rows;
      cell_row_bf16(g + r * 4 * d, x + dir * xs[0] + row * xs[1], b + dir * 4 * d, c + dir * cs[0] + row * cs[1],
                    out_c + r * d, out_h + r * d, d, static_cast<float>(clip));
    }
  });
  return {cell, h_in};
}

}  // namespace

TORCH_LIBRARY(elmo_fused, m) {
  m.def("lstm_cell_tail(Tensor gates, Tensor x_part, Tensor bias, Tensor c_prev, float clip) -> (Tensor, Tensor)",
        &lstm_cell_tail);
  m.def("lstm_cell_tail_bf16(Tensor gates, Tensor x_part, Tensor bias, Tensor c_prev, float clip) -> (Tensor, Tensor)",
        &lstm_cell_tail_bf16);
}
