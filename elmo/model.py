"""The ELMo biLM of Peters et al. (2018) as small PyTorch modules.

Parameters are held in the layout of the official weights file (TensorFlow ``x @ W`` kernels, gate order
i, j, f, o, bias without the forget bias), so loading and saving are plain copies and nothing is reordered.

Notation: B batch, T tokens (without boundaries), S = T + 2 (with ``<S>``/``</S>``), C chars per token,
E char embedding, F CNN filters, P projection, D LSTM cell, L LSTM layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from elmo.bf16 import GEMM_DTYPE
from elmo.chars import PAD_CHAR, bos_ids, eos_ids
from elmo.config import N_CHARACTERS_INFERENCE, ElmoConfig
from elmo.fused_step import can_fuse, can_fuse_bf16, cell_tail, cell_tail_bf16
from elmo.token_cache import DEFAULT_CHUNK_ROWS, TokenCache, encode_in_chunks
from elmo.weight_cache import DerivedWeights, cast_copies, weights_stamp

FORGET_BIAS = 1.0  # TensorFlow's LSTMCell adds this to the forget gate; it is not in the weights file.
SHORT_TOKEN_CHARS = 24  # the char CNN reads only this many positions of a short token (exactly: CharEncoder)
_PAD_ID = PAD_CHAR + 1  # char ids are shifted by one: 0 marks a padded (non-existent) token


class ClipCounter:
    """Counts how many memory-cell and projection elements were clipped (a diagnostic, off by default: with no
    counter set the step does no counting work). In the bit-exact mode the padding rows of a chunk are counted too."""

    def __init__(self) -> None:
        self.cell_clipped = 0
        self.cell_total = 0
        self.proj_clipped = 0
        self.proj_total = 0

    def add_cell(self, cell: torch.Tensor, cell_clip: float | None) -> None:
        """Counts the elements of an unclipped memory cell (..., D) beyond ``cell_clip``."""
        if cell_clip:
            self.cell_clipped += int((cell.abs() > cell_clip).sum())
        self.cell_total += cell.numel()

    def add_proj(self, proj: torch.Tensor, proj_clip: float | None) -> None:
        """Counts the elements of an unclipped projection (..., P) beyond ``proj_clip``."""
        if proj_clip:
            self.proj_clipped += int((proj.abs() > proj_clip).sum())
        self.proj_total += proj.numel()


def stacked_filters(weights: list[torch.Tensor], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The convolutions' kernels [(n_i, E, w_i), ...] followed by their biases [(n_i,), ...] -> one matrix
    (E * widest, F) in ``dtype``, each filter zero-padded on the right to the widest width (row e * widest + k
    multiplies char position k of embedding dimension e), and the biases (F,) as they are."""
    kernels, biases = weights[: len(weights) // 2], weights[len(weights) // 2 :]
    widest = max(kernel.shape[2] for kernel in kernels)
    padded = torch.cat([F.pad(kernel, (0, widest - kernel.shape[2])) for kernel in kernels])  # (F, E, widest)
    return padded.reshape(padded.shape[0], -1).t().to(dtype).contiguous(), torch.cat(biases)


class CharEncoder(nn.Module):
    """Context-independent token representations: char ids (N, C) -> (N, P)."""

    def __init__(self, config: ElmoConfig):
        super().__init__()
        cnn = config.char_cnn
        # Row 0 is the all-zero vector of padded (non-existent) tokens; rows 1..261 are the file's char_embed.
        self.char_embedding = nn.Embedding(N_CHARACTERS_INFERENCE, cnn.embedding_dim, padding_idx=0)
        self.convolutions = nn.ModuleList(nn.Conv1d(cnn.embedding_dim, count, width) for width, count in cnn.filters)
        n_filters = cnn.n_filters
        # Each highway layer is one (F, 2F) kernel: [transform | carry], TF's x @ W form.
        self.highway_kernels = nn.ParameterList(
            nn.Parameter(torch.zeros(n_filters, 2 * n_filters)) for _ in range(cnn.n_highway)
        )
        self.highway_biases = nn.ParameterList(nn.Parameter(torch.zeros(2 * n_filters)) for _ in range(cnn.n_highway))
        self.has_projection = config.has_char_projection  # decided by the weights file (CNN_proj)
        if self.has_projection:
            self.projection = nn.Linear(n_filters, config.lstm.projection_dim)
        self.activation = torch.tanh if cnn.activation == "tanh" else torch.relu
        self.bf16 = False  # GEMMs and convolutions on bfloat16 operands (set through ``BiLm.arithmetic``)
        self._bf16_copies = DerivedWeights(cast_copies)  # of ``_gemm_weights``
        self._stacked_filters = DerivedWeights(stacked_filters)  # for ``_short_maxima``

    @property
    def widest_filter(self) -> int:
        return max(conv.kernel_size[0] for conv in self.convolutions)

    def short_rows(self, char_ids: torch.Tensor) -> torch.Tensor:
        """char_ids (N, C) -> (N,) bool: the tokens whose every char-CNN window starting at or past
        ``SHORT_TOKEN_CHARS - widest + 1`` reads padding only (at most that many chars with the word boundaries: 18
        for the published filters, i.e. words of up to 16 chars), when C leaves room for ``_short_maxima``."""
        widest = self.widest_filter
        tail_start = SHORT_TOKEN_CHARS - widest + 1
        if char_ids.shape[1] < SHORT_TOKEN_CHARS + widest - 1 or tail_start < 1:
            return char_ids.new_zeros(char_ids.shape[0], dtype=torch.bool)
        return (char_ids[:, tail_start:] == _PAD_ID).all(dim=1)

    def _max_pooled(self, char_ids: torch.Tensor, short: bool) -> torch.Tensor:
        """Each filter's maximum over positions, before the activation: (N, C) -> (N, F). ``short``: every row is a
        ``short_rows`` token (``_short_maxima``); else one convolution per filter width over all C positions."""
        if short:
            return self._short_maxima(char_ids)
        x = self.char_embedding(char_ids).transpose(1, 2)  # (N, E, C)
        if not self.bf16:
            return torch.cat([conv(x).amax(dim=-1) for conv in self.convolutions], dim=-1)
        copies = self._bf16_copies.of(self._gemm_weights(), GEMM_DTYPE)  # convolution weights first
        x = x.to(GEMM_DTYPE)
        return torch.cat(
            [
                F.conv1d(x, weight).amax(dim=-1).to(conv.bias.dtype) + conv.bias  # bias after the maximum: the same
                for conv, weight in zip(self.convolutions, copies, strict=False)
            ],
            dim=-1,
        )

    def _short_maxima(self, char_ids: torch.Tensor) -> torch.Tensor:
        """``_max_pooled`` of short tokens: every filter at the first ``SHORT_TOKEN_CHARS`` window starts, as one GEMM.

        Each filter is zero-padded on the right to the widest width (``stacked_filters``), so start p reads chars
        p .. p + widest - 1, all within the first ``SHORT_TOKEN_CHARS + widest - 1`` <= C; a narrower filter's extra
        columns meet zeros. Starts from ``SHORT_TOKEN_CHARS - widest + 1`` on read padding only (``short_rows``):
        they hold the all-padding window, and every later start over the full C positions is that same window, so
        the maximum equals the maximum over all C positions, for ~1/2 of the work at C = 50 (the zero-padded
        filters cost 1.17x the convolutions' multiplications at the published widths) in one GEMM instead of one
        convolution per width (measured 64 tokens, ``small`` filters, 2 threads: 4.0 -> 2.2 ms)."""
        widest, n = self.widest_filter, char_ids.shape[0]
        x = self.char_embedding(char_ids[:, : SHORT_TOKEN_CHARS + widest - 1])  # (N, SHORT_TOKEN_CHARS + widest - 1, E)
        windows = x.unfold(1, widest, 1).reshape(n * SHORT_TOKEN_CHARS, -1)  # (N * starts, E * widest), [e, k] order
        dtype = GEMM_DTYPE if self.bf16 else x.dtype
        weights = [conv.weight for conv in self.convolutions] + [conv.bias for conv in self.convolutions]
        if torch.is_grad_enabled() and any(w.requires_grad for w in weights):  # training: gradients reach the filters
            matrix, bias = stacked_filters(weights, dtype)  # (E * widest, F), (F,)
        else:
            matrix, bias = self._stacked_filters.of(weights, dtype)  # kept while the filters stay the same
        values = torch.mm(windows.to(dtype), matrix).view(n, SHORT_TOKEN_CHARS, -1)  # (N, starts, F)
        return values.amax(dim=1).to(x.dtype) + bias

    def drop_kept_weights(self) -> None:
        """Frees the kept bf16 copies and stacked filters (made again when next needed)."""
        self._bf16_copies.clear()
        self._stacked_filters.clear()

    def _gemm_weights(self) -> list[torch.Tensor]:
        """The weights that bf16 multiplies with: each convolution's, each highway kernel, the projection's."""
        weights = [conv.weight for conv in self.convolutions] + list(self.highway_kernels)
        return weights + ([self.projection.weight] if self.has_projection else [])

    def _highway_and_projection(self, h: torch.Tensor) -> torch.Tensor:
        """The highway layers and the projection: h (N, F) -> (N, P)."""
        n_filters = h.shape[-1]
        copies = self._bf16_copies.of(self._gemm_weights(), GEMM_DTYPE)[len(self.convolutions) :] if self.bf16 else None
        for layer, (kernel, bias) in enumerate(zip(self.highway_kernels, self.highway_biases, strict=True)):
            if copies is None:
                z = torch.addmm(bias, h, kernel)  # (N, 2F)
            else:
                z = torch.mm(h.to(GEMM_DTYPE), copies[layer]).to(h.dtype).add_(bias)
            transform, carry = z[:, :n_filters], z[:, n_filters:]
            gate = torch.sigmoid(carry)  # the TF "carry" gate multiplies the transform branch
            h = gate * torch.relu(transform) + (1.0 - gate) * h
        if not self.has_projection:
            return h
        if copies is None:
            return self.projection(h)
        return F.linear(h.to(GEMM_DTYPE), copies[-1]).to(h.dtype).add_(self.projection.bias)

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        """char_ids (N, C) int64 -> token representations (N, P). Short tokens (``short_rows``) take the cheaper,
        equal path of ``_max_pooled``; a batch of both kinds is split, so callers that need a token's bits to be
        independent of its neighbours pass one kind at a time (``encode_in_chunks`` with ``classes``)."""
        short = self.short_rows(char_ids)
        if bool(short.all()):
            pooled = self._max_pooled(char_ids, short=True)
        elif not bool(short.any()):
            pooled = self._max_pooled(char_ids, short=False)
        else:
            short_part = self._max_pooled(char_ids[short], short=True)
            long_part = self._max_pooled(char_ids[~short], short=False)
            pooled = short_part.new_empty(char_ids.shape[0], short_part.shape[1])
            pooled[short] = short_part
            pooled[~short] = long_part
        return self._highway_and_projection(self.activation(pooled))  # (N, F) -> (N, P)


def zero_state_tensors(config: ElmoConfig, like: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All-zero LSTM state of both directions, on ``like``'s device and dtype: h (2, L, B, P), c (2, L, B, D)."""
    lstm = config.lstm
    return (
        like.new_zeros(2, lstm.n_layers, batch_size, lstm.projection_dim),
        like.new_zeros(2, lstm.n_layers, batch_size, lstm.dim),
    )


def encode_distinct_tokens(encoder: CharEncoder, char_ids: torch.Tensor) -> torch.Tensor:
    """The char encoder over every position, each distinct token once: (B, S, C) -> (B, S, P)."""
    batch, steps, width = char_ids.shape
    unique, inverse = torch.unique(char_ids.reshape(-1, width), dim=0, return_inverse=True)  # (U, C), (B*S,)
    return encoder(unique)[inverse].view(batch, steps, -1)


class LstmLayer(nn.Module):
    """One unidirectional LSTM layer with a projected, clipped hidden state (TF LSTMCell(num_proj=P)).

    It holds the parameters; ``run_layer_pair`` runs the forward and backward layers of one depth together."""

    def __init__(
        self, input_dim: int, cell_dim: int, projection_dim: int, cell_clip: float | None, proj_clip: float | None
    ):
        super().__init__()
        self.input_dim = input_dim
        self.cell_dim = cell_dim
        self.kernel = nn.Parameter(torch.zeros(input_dim + projection_dim, 4 * cell_dim))  # rows [x ; h]
        self.bias = nn.Parameter(torch.zeros(4 * cell_dim))  # gate blocks i, j, f, o
        self.projection = nn.Parameter(torch.zeros(cell_dim, projection_dim))
        self.cell_clip = cell_clip
        self.proj_clip = proj_clip

    def bias_with_forget(self) -> torch.Tensor:
        """The gate bias with TensorFlow's forget bias added to the f block: (4D,)."""
        d = self.cell_dim
        bias = self.bias.clone()
        bias[2 * d : 3 * d] += FORGET_BIAS
        return bias


@dataclass(frozen=True)
class Arithmetic:
    """How the biLM does its arithmetic (results differ only in float rounding, except ``bf16``).

    ``row_chunk``: when set, every GEMM of the LSTM runs on chunks of exactly this many rows (rows padded), and
    the input GEMM on chunks of ``input_rows`` rows, so that a row's bits never depend on the batch around it (the
    bit-exact mode). ``bf16``: GEMM operands in bfloat16 (products accumulated, and the cell state kept, in the
    model's float type)."""

    row_chunk: int | None = None
    input_rows: int = 256
    bf16: bool = False


def _adjacent_view(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """a and b as one (2, ...) view when b directly follows a in the same storage (``share_pair_storage``)."""
    same_layout = a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
    if not (same_layout and a.is_contiguous() and b.is_contiguous()):
        return None
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return None
    if b.data_ptr() - a.data_ptr() != a.numel() * a.element_size():
        return None
    return a.detach().as_strided((2, *a.shape), (a.numel(), *a.stride()))


def pair_view(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The forward and backward direction's weight stacked: (2, ...); a view (no copy) once the two share one
    storage (``BiLm.share_pair_storage``), else a copy."""
    view = _adjacent_view(a, b)
    return view if view is not None else torch.stack([a.detach(), b.detach()])


def share_pair_storage(a: nn.Parameter, b: nn.Parameter) -> None:
    """Re-lays two same-shaped parameters into one (2, ...) storage, so that ``pair_view`` needs no copy."""
    if _adjacent_view(a, b) is None:
        stacked = torch.stack([a.detach(), b.detach()])
        a.data, b.data = stacked[0], stacked[1]


class _PairStep:
    """The LSTM step of a forward/backward layer pair, with the stacked parameters of both directions.

    Shapes: gates (2, n, 4D), h (2, n, P), c (2, n, D) for the n rows computed. In bf16 the weights are contiguous
    bfloat16 copies, the input part and the gates are the bfloat16 results of their GEMMs, and the gate sum (with the
    float bias), the nonlinearities, the cell and h stay in the model's float type."""

    def __init__(self, layers: tuple[LstmLayer, LstmLayer], arithmetic: Arithmetic):
        first = layers[0]
        self.d = first.cell_dim
        self.cell_clip, self.proj_clip = first.cell_clip, first.proj_clip
        self.bf16 = arithmetic.bf16
        with torch.no_grad():
            kernel = pair_view(layers[0].kernel, layers[1].kernel)  # (2, in + P, 4D)
            self.input_kernel = self._operand(kernel[:, : first.input_dim])  # (2, in, 4D)
            self.hidden_kernel = self._operand(kernel[:, first.input_dim :])  # (2, P, 4D)
            self.projection = self._operand(pair_view(layers[0].projection, layers[1].projection))  # (2, D, P)
            self.bias = torch.stack([layer.bias_with_forget() for layer in layers])  # (2, 4D)

    def _operand(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.to(GEMM_DTYPE).contiguous() if self.bf16 else weight

    def input_part(self, inputs: torch.Tensor) -> torch.Tensor:
        """Every position at once: inputs (2, R, in) -> x @ W_x (2, R, 4D), bfloat16 in bf16. The bias is added
        with the gates, in the step (broadcasting it into this large tensor would cost a pass over it)."""
        return torch.bmm(inputs.to(GEMM_DTYPE) if self.bf16 else inputs, self.input_kernel)

    def __call__(
        self, x_part: torch.Tensor, h: torch.Tensor, c: torch.Tensor, clip_counter: ClipCounter | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x_part (2, n, 4D) from ``input_part``, previous h (2, n, P) and c (2, n, D) -> new (h, c)."""
        if self.bf16:
            gates = torch.bmm(h.to(GEMM_DTYPE), self.hidden_kernel)  # (2, n, 4D) bfloat16
            if clip_counter is None and can_fuse_bf16(gates, x_part, c):
                cell, hidden_input = cell_tail_bf16(gates, x_part, self.bias, c, self.cell_clip)
                return self._project(hidden_input, h.dtype, None), cell
            gates = gates.to(c.dtype).add_(x_part).add_(self.bias.unsqueeze(1))
        else:
            gates = torch.bmm(h, self.hidden_kernel)  # (2, n, 4D), h contiguous
            if clip_counter is None and can_fuse(gates, x_part, c):
                cell, hidden_input = cell_tail(gates, x_part, self.bias, c, self.cell_clip)
                return self._project(hidden_input, h.dtype, None), cell
            gates.add_(x_part).add_(self.bias.unsqueeze(1))
        i, j, f, o = gates.split(self.d, dim=-1)
        cell = torch.addcmul(i.sigmoid_() * j.tanh_(), f.sigmoid_(), c)  # (2, n, D)
        if clip_counter is not None:
            clip_counter.add_cell(cell, self.cell_clip)
        if self.cell_clip:
            cell.clamp_(-self.cell_clip, self.cell_clip)
        return self._project(o.sigmoid_().mul_(torch.tanh(cell)), h.dtype, clip_counter), cell

    def _project(self, hidden_input: torch.Tensor, dtype: torch.dtype, clip_counter: ClipCounter | None):
        """sigmoid(o) * tanh(cell) (2, n, D) -> the clipped projection in ``dtype``, the new h (2, n, P)."""
        if self.bf16:
            hidden = torch.bmm(hidden_input.to(GEMM_DTYPE), self.projection).to(dtype)
        else:
            hidden = torch.bmm(hidden_input, self.projection)
        if clip_counter is not None:
            clip_counter.add_proj(hidden, self.proj_clip)
        if self.proj_clip:
            hidden.clamp_(-self.proj_clip, self.proj_clip)
        return hidden


def _chunked_rows(function, x: torch.Tensor, rows: int) -> torch.Tensor:
    """``function`` over x (2, N, K) in calls of exactly ``rows`` rows (the last padded with zeros) -> (2, N, ·)."""
    n = x.shape[1]
    padded = -(-n // rows) * rows
    if padded != n:
        x = torch.cat([x, x.new_zeros(x.shape[0], padded - n, x.shape[2])], dim=1)
    return torch.cat([function(x[:, start : start + rows]) for start in range(0, padded, rows)], dim=1)[:, :n]


def run_layer_pair(
    layers: tuple[LstmLayer, LstmLayer],
    inputs: torch.Tensor,
    active_rows: list[int],
    h: torch.Tensor,
    c: torch.Tensor,
    arithmetic: Arithmetic = Arithmetic(),
    clip_counter: ClipCounter | None = None,
    step: _PairStep | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Runs the forward and the backward layer of one depth in lockstep (inference only).

    The input is packed time-major (``pack_positions``): inputs (2, N, in) holds, for each step t, the
    ``active_rows[t]`` rows still running at t (rows sorted longest first, the backward direction already reversed
    within each row), N = sum(active_rows). So the input GEMM covers real tokens only, and each step reads one
    contiguous slice. h (2, B, P), c (2, B, D): the initial state. Both directions have the same active rows at
    every step, so a step is one batched GEMM for both; the running state is kept contiguous (rows that stop are
    moved out). -> outputs (2, N, P) packed like the input, and each row's final (h, c) (2, B, ·): its state
    after its last step. ``step``: the layers' ``_PairStep`` for ``arithmetic`` when the caller keeps one
    (``BiLm.pair_step``), else made here.
    """
    step = step if step is not None else _PairStep(layers, arithmetic)
    if arithmetic.row_chunk is None:
        x_part = step.input_part(inputs)  # (2, N, 4D)
    else:
        x_part = _chunked_rows(step.input_part, inputs, arithmetic.input_rows)
    final_h, final_c = h.clone(), c.clone()  # each row's state once it has stopped
    h, c = h.contiguous(), c.contiguous()  # (2, n, ·): the rows still running
    outputs = inputs.new_empty(2, inputs.shape[1], h.shape[-1])  # (2, N, P)
    offset = 0
    for n in active_rows:
        if n < h.shape[1]:  # rows [n, running) stopped after the previous step
            final_h[:, n : h.shape[1]] = h[:, n:]
            final_c[:, n : c.shape[1]] = c[:, n:]
            h, c = h[:, :n].contiguous(), c[:, :n].contiguous()
        if n == 0:
            break
        x_t = x_part[:, offset : offset + n]  # (2, n, 4D)
        if arithmetic.row_chunk is None:
            h, c = step(x_t, h, c, clip_counter)
        else:
            h, c = _step_in_chunks(step, x_t, h, c, arithmetic.row_chunk, clip_counter)
        outputs[:, offset : offset + n] = h
        offset += n
    final_h[:, : h.shape[1]] = h
    final_c[:, : c.shape[1]] = c
    return outputs, final_h, final_c


def pack_positions(active_rows: list[int], steps: int, device: torch.device) -> torch.Tensor:
    """Flat indices into (B*S) of the real positions in time-major order: for each step t, rows 0..active_rows[t]-1.
    -> (N,) int64, N = sum(active_rows). ``x.reshape(2, B*S, ·)[:, index]`` packs; assigning through it unpacks."""
    counts = torch.tensor(active_rows, device=device)
    step_of = torch.repeat_interleave(torch.arange(len(active_rows), device=device), counts)  # (N,)
    starts = torch.cumsum(counts, 0) - counts  # (S,) first packed index of each step
    row_of = torch.arange(step_of.shape[0], device=device) - starts[step_of]  # (N,)
    return row_of * steps + step_of


def _step_in_chunks(
    step: _PairStep, x_part: torch.Tensor, h: torch.Tensor, c: torch.Tensor, chunk: int, clip_counter
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step as calls of exactly ``chunk`` rows (rows past n are zero padding, computed and dropped):
    x_part (2, n, 4D), h (2, n, P), c (2, n, D) -> hidden (2, n, P), cell (2, n, D), contiguous."""
    n = h.shape[1]
    padded = -(-n // chunk) * chunk
    if padded != n:
        x_part, h, c = (torch.cat([x, x.new_zeros(2, padded - n, x.shape[2])], dim=1) for x in (x_part, h, c))
    pieces = [
        step(x_part[:, i : i + chunk], h[:, i : i + chunk], c[:, i : i + chunk], clip_counter)
        for i in range(0, padded, chunk)
    ]
    hidden = torch.cat([piece[0] for piece in pieces], dim=1)
    cell = torch.cat([piece[1] for piece in pieces], dim=1)
    if padded != n:
        hidden, cell = hidden[:, :n].contiguous(), cell[:, :n].contiguous()
    return hidden, cell


@dataclass
class BiLmState:
    """LSTM state of both directions: h (2, L, B, P), c (2, L, B, D); direction 0 forward, 1 backward."""

    h: torch.Tensor
    c: torch.Tensor

    @property
    def batch_size(self) -> int:
        """Number of rows held."""
        return self.h.shape[2]

    def rows(self, n: int) -> BiLmState:
        """The first n rows, zero-extended when fewer are held."""
        if n <= self.batch_size:
            return BiLmState(self.h[:, :, :n], self.c[:, :, :n])
        pad = n - self.batch_size
        return BiLmState(F.pad(self.h, (0, 0, 0, pad)), F.pad(self.c, (0, 0, 0, pad)))

    def expand(self, n: int) -> BiLmState:
        """One stored row (batch size 1) repeated for n rows."""
        return BiLmState(self.h.expand(-1, -1, n, -1), self.c.expand(-1, -1, n, -1))


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverses each row's first ``lengths[b]`` steps, leaving padding in place: x (B, S, ...) -> same shape."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, S)
    flipped = lengths.unsqueeze(1) - 1 - steps  # (B, S)
    index = torch.where(flipped >= 0, flipped, steps)  # (B, S)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, index)


class BiLm(nn.Module):
    """Char encoder + independent forward and backward LSTM stacks.

    ``forward`` takes char ids without boundaries (B, T, C) and returns layers (L+1, B, T, 2P), zero at padded
    positions, plus the final LSTM state (for stateful use). Settable attributes: ``token_cache`` (a
    ``TokenCache``: layer-0 vectors kept across batches), ``arithmetic`` (bit-exact chunks, bf16) and
    ``clip_counter`` (diagnostics).
    """

    def __init__(self, config: ElmoConfig):
        super().__init__()
        self.config = config
        lstm = config.lstm
        self.char_encoder = CharEncoder(config)
        self.directions = nn.ModuleList(
            nn.ModuleList(
                LstmLayer(lstm.projection_dim, lstm.dim, lstm.projection_dim, lstm.cell_clip, lstm.proj_clip)
                for _ in range(lstm.n_layers)
            )
            for _ in range(2)
        )
        width = config.char_cnn.max_characters_per_token
        self.register_buffer("bos_ids", torch.from_numpy(bos_ids(width)), persistent=False)
        self.register_buffer("eos_ids", torch.from_numpy(eos_ids(width)), persistent=False)
        self.token_cache: TokenCache | None = None
        self._pair_steps: dict[int, tuple[tuple, _PairStep]] = {}  # depth -> (key, step): ``pair_step``
        self.arithmetic = Arithmetic()
        self.clip_counter: ClipCounter | None = None

    @property
    def arithmetic(self) -> Arithmetic:
        """How the biLM computes (``Arithmetic``). Setting it drops what was computed the other way: the kept
        layer steps and the token cache's vectors."""
        return self._arithmetic

    @arithmetic.setter
    def arithmetic(self, value: Arithmetic) -> None:
        self._arithmetic = value
        self.char_encoder.bf16 = value.bf16
        self.char_encoder.drop_kept_weights()
        self._pair_steps.clear()
        if self.token_cache is not None:
            self.token_cache.clear()

    def pair_step(self, depth: int) -> _PairStep:
        """The step of depth ``depth``'s layer pair, kept across forward passes while the arithmetic and the layers'
        weights stay the same (so bf16 casts the weights once, not every batch)."""
        pair = (self.directions[0][depth], self.directions[1][depth])
        key = (self.arithmetic, weights_stamp([p for layer in pair for p in layer.parameters()]))
        kept = self._pair_steps.get(depth)
        if kept is None or kept[0] != key:
            kept = (key, _PairStep(pair, self.arithmetic))
            self._pair_steps[depth] = kept
        return kept[1]

    def share_pair_storage(self) -> None:
        """Lays out each depth's forward and backward LSTM weights in one storage, so that the lockstep step reads
        them as one (2, ...) tensor without copying them every forward pass (inference; ``.to()`` undoes it and
        the forward pass then copies, correct but slower, until this is called again)."""
        for fwd, bwd in zip(*self.directions, strict=True):
            share_pair_storage(fwd.kernel, bwd.kernel)
            share_pair_storage(fwd.projection, bwd.projection)

    def zero_state(self, batch_size: int) -> BiLmState:
        """All-zero initial state for ``batch_size`` rows."""
        return BiLmState(*zero_state_tensors(self.config, self.char_encoder.char_embedding.weight, batch_size))

    def add_boundaries(self, char_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) -> ids with ``<S>`` first and ``</S>`` right after each row's last token (B, T+2, C),
        and the lengths with boundaries (B,)."""
        batch, tokens, width = char_ids.shape
        lengths = (char_ids > 0).any(-1).sum(-1)  # (B,)
        with_bounds = char_ids.new_zeros(batch, tokens + 2, width)
        with_bounds[:, 1 : tokens + 1] = char_ids
        with_bounds[:, 0] = self.bos_ids
        with_bounds[torch.arange(batch, device=char_ids.device), lengths + 1] = self.eos_ids
        return with_bounds, lengths + 2

    def token_representations(self, char_ids: torch.Tensor) -> torch.Tensor:
        """Char encoder over every position: (B, S, C) -> (B, S, P), each distinct token encoded once (and, with a
        token cache, once per process; in the bit-exact mode in fixed-size chunks)."""
        if self.token_cache is None and self.arithmetic.row_chunk is None:
            return encode_distinct_tokens(self.char_encoder, char_ids)
        batch, steps, width = char_ids.shape
        unique, inverse = torch.unique(char_ids.reshape(-1, width), dim=0, return_inverse=True)  # (U, C), (B*S,)
        if self.token_cache is not None:
            encoded = self.token_cache.encode(self.char_encoder, unique, self.char_encoder.short_rows)  # (U, P)
        else:
            encoded = encode_in_chunks(
                self.char_encoder, unique, DEFAULT_CHUNK_ROWS, self.char_encoder.short_rows(unique)
            )
        return encoded[inverse].view(batch, steps, -1)

    def forward(self, char_ids: torch.Tensor, initial_state: BiLmState | None = None) -> tuple[torch.Tensor, BiLmState]:
        """char_ids (B, T, C) -> (layers (L+1, B, T, 2P), final state). Rows run sorted by length internally."""
        batch, tokens, _ = char_ids.shape
        ids, lengths = self.add_boundaries(char_ids)  # (B, S, C), (B,)
        steps = ids.shape[1]
        order = torch.argsort(lengths, descending=True, stable=True)  # longest first
        restore = torch.argsort(order)
        ids, lengths = ids[order], lengths[order]
        active_rows = (lengths.unsqueeze(0) > torch.arange(steps, device=ids.device).unsqueeze(1)).sum(1).tolist()
        mask = torch.arange(steps, device=ids.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, S)
        token_repr = self.token_representations(ids) * mask.unsqueeze(-1)  # (B, S, P)
        state = initial_state if initial_state is not None else self.zero_state(batch)
        state_h, state_c = state.h[:, :, order], state.c[:, :, order]  # (2, L, B, ·)

        index = pack_positions(active_rows, steps, ids.device)  # (N,)
        both = torch.stack([token_repr, reverse_within_length(token_repr, lengths)])  # (2, B, S, P)
        inputs = both.reshape(2, batch * steps, -1)[:, index]  # (2, N, P)
        outputs, final_h, final_c = [], [], []
        for depth, pair in enumerate(zip(*self.directions, strict=True)):
            out, h, c = run_layer_pair(
                pair,
                inputs,
                active_rows,
                state_h[:, depth],
                state_c[:, depth],
                self.arithmetic,
                self.clip_counter,
                step=self.pair_step(depth),
            )  # (2, N, P), (2, B, P), (2, B, D)
            if depth > 0 and self.config.lstm.use_skip_connections:
                out = out + inputs
            outputs.append(out)
            final_h.append(h)
            final_c.append(c)
            inputs = out

        layers = [torch.cat([token_repr, token_repr], dim=-1)]  # (B, S, 2P): layer 0 duplicated
        for out in outputs:
            padded = out.new_zeros(2, batch * steps, out.shape[-1])
            padded[:, index] = out
            padded = padded.view(2, batch, steps, -1)  # (2, B, S, P), zero past each row's end
            layers.append(torch.cat([padded[0], reverse_within_length(padded[1], lengths)], dim=-1))
        stacked = torch.stack(layers)[:, restore, 1 : tokens + 1]  # (L+1, B, T, 2P), input order, no boundaries
        token_mask = (char_ids > 0).any(-1)  # (B, T)
        stacked = stacked * token_mask.unsqueeze(0).unsqueeze(-1)
        final = BiLmState(torch.stack(final_h, dim=1)[:, :, restore], torch.stack(final_c, dim=1)[:, :, restore])
        return stacked, final
