"""The biLM as trained: shared char encoder, forward and backward LSTM stacks, one softmax shared by both.

Training uses PyTorch's fused ``nn.LSTM(proj_size=P)`` (oneDNN/cuDNN kernels, several times faster than a
per-step loop). It has no cell/projection clipping, so models trained here are exported with ``cell_clip`` and
``proj_clip`` set to null (no clipping at inference either): training and inference compute the same function.
``export_bilm`` converts the parameters to the official layout (TF gate order, forget bias outside the bias).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from elmo.config import ElmoConfig
from elmo.errors import ConfigError
from elmo.model import FORGET_BIAS, BiLm, CharEncoder, encode_distinct_tokens, zero_state_tensors

# nn.LSTM with proj_size runs its generic (non-oneDNN) kernel on CPU; the warning says only that.
warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")

TORCH_TO_TF_GATES = [0, 2, 1, 3]  # nn.LSTM blocks are (i, f, g, o); TF's are (i, j=g, f, o); its own inverse


class TrainableBiLm(nn.Module):
    """Char CNN + two independent LSTM stacks + a softmax over the word vocabulary shared across directions."""

    def __init__(self, config: ElmoConfig, vocab_size: int, dropout: float = 0.1):
        super().__init__()
        if config.lstm.cell_clip or config.lstm.proj_clip:
            raise ConfigError(
                "training uses unclipped fused LSTMs: set lstm.cell_clip and lstm.proj_clip to null in the options"
            )
        self.config = config
        lstm = config.lstm
        self.char_encoder = CharEncoder(config)
        self.directions = nn.ModuleList(
            nn.ModuleList(
                nn.LSTM(lstm.projection_dim, lstm.dim, proj_size=lstm.projection_dim, batch_first=True)
                for _ in range(lstm.n_layers)
            )
            for _ in range(2)
        )
        self.softmax_weight = nn.Parameter(torch.empty(vocab_size, lstm.projection_dim))
        self.softmax_bias = nn.Parameter(torch.zeros(vocab_size))
        self.dropout = dropout
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """bilm-tf's initialisation (training.py), plus TF's forget bias folded into the fused LSTM bias."""
        enc = self.char_encoder
        n_filters = self.config.char_cnn.n_filters
        nn.init.uniform_(enc.char_embedding.weight, -1.0, 1.0)
        enc.char_embedding.weight[0].zero_()
        for conv in enc.convolutions:
            if self.config.char_cnn.activation == "relu":
                nn.init.uniform_(conv.weight, -0.05, 0.05)
            else:
                width = conv.kernel_size[0]
                nn.init.normal_(conv.weight, 0.0, math.sqrt(1.0 / (width * conv.in_channels)))
            conv.bias.zero_()
        for kernel, bias in zip(enc.highway_kernels, enc.highway_biases, strict=True):
            nn.init.normal_(kernel, 0.0, math.sqrt(1.0 / n_filters))
            bias.zero_()
            bias[n_filters:] = -2.0  # carry bias: start mostly passing the CNN output through
        if enc.has_projection:
            nn.init.normal_(enc.projection.weight, 0.0, math.sqrt(1.0 / n_filters))
            enc.projection.bias.zero_()
        d = self.config.lstm.dim
        for layers in self.directions:
            for lstm in layers:
                lstm.bias_hh_l0.zero_()
                lstm.bias_ih_l0.zero_()
                lstm.bias_ih_l0[d : 2 * d] = FORGET_BIAS
        nn.init.normal_(self.softmax_weight, 0.0, 1.0 / math.sqrt(self.config.lstm.projection_dim))

    def zero_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """h (2, L, B, P) and c (2, L, B, D), zeros."""
        return zero_state_tensors(self.config, self.softmax_weight, batch_size)

    def encode_tokens(self, chars: torch.Tensor) -> torch.Tensor:
        """chars (B, W, C) -> token representations (B, W, P), each distinct token encoded once."""
        return encode_distinct_tokens(self.char_encoder, chars)

    def run_direction(
        self, direction: int, inputs: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """One direction over a window of token representations (B, W, P) (``encode_tokens``): -> every layer's
        outputs [(B, W, P)] (layer 0 = the inputs), final h, c."""
        layers = [inputs]
        new_h, new_c = [], []
        for index, lstm in enumerate(self.directions[direction]):
            x = F.dropout(inputs, self.dropout, self.training)
            out, (h_n, c_n) = lstm(x, (h[index : index + 1].contiguous(), c[index : index + 1].contiguous()))
            if index > 0 and self.config.lstm.use_skip_connections:
                out = out + inputs
            layers.append(out)
            new_h.append(h_n[0])
            new_c.append(c_n[0])
            inputs = out
        return layers, torch.stack(new_h), torch.stack(new_c)

    def forward(
        self,
        token_chars: torch.Tensor,
        forward_tokens: torch.Tensor,
        backward_tokens: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both directions over a window: the step's distinct tokens' chars (U, C) are encoded once, each direction
        reads its positions' rows ((B, W) indices) -> top outputs (2, B, W, P) after dropout, and the final h, c."""
        h, c = state
        representations = self.char_encoder(token_chars)  # (U, P)
        tops, hs, cs = [], [], []
        for direction, positions in enumerate((forward_tokens, backward_tokens)):
            inputs = representations[positions]  # (B, W, P)
            layers, h_d, c_d = self.run_direction(direction, inputs, h[direction], c[direction])
            tops.append(F.dropout(layers[-1], self.dropout, self.training))
            hs.append(h_d)
            cs.append(c_d)
        return torch.stack(tops), torch.stack(hs), torch.stack(cs)

    def full_softmax_loss(self, top: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross entropy over the whole vocabulary: top (N, P), targets (N,) -> scalar."""
        logits = F.linear(top, self.softmax_weight, self.softmax_bias)  # (N, V)
        return F.cross_entropy(logits, targets)

    def sampled_softmax_loss(self, top: torch.Tensor, targets: torch.Tensor, n_samples: int) -> torch.Tensor:
        """TF-style sampled softmax with a log-uniform sampler and accidental-hit removal: (N, P), (N,) -> scalar.

        Candidates are shared by the batch; logits are corrected by the log of their expected counts so the loss
        estimates the full softmax's (Jean et al. 2015, as ``tf.nn.sampled_softmax_loss``).
        """
        vocab_size = self.softmax_weight.shape[0]
        samples = log_uniform_sample(n_samples, vocab_size, top.device)  # (K,)
        log_q_true = torch.log(n_samples * log_uniform_prob(targets, vocab_size))  # (N,)
        log_q_sampled = torch.log(n_samples * log_uniform_prob(samples, vocab_size))  # (K,)
        true_logits = (top * self.softmax_weight[targets]).sum(-1) + self.softmax_bias[targets] - log_q_true
        sampled_logits = F.linear(top, self.softmax_weight[samples], self.softmax_bias[samples]) - log_q_sampled
        sampled_logits = sampled_logits.masked_fill(samples.unsqueeze(0) == targets.unsqueeze(1), -1e9)  # (N, K)
        logits = torch.cat([true_logits.unsqueeze(1), sampled_logits], dim=1)  # (N, 1 + K)
        return F.cross_entropy(logits, torch.zeros_like(targets))


def log_uniform_prob(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Zipfian probability of each id: (log(k + 2) - log(k + 1)) / log(V + 1)."""
    k = ids.to(torch.float64)
    return ((torch.log(k + 2) - torch.log(k + 1)) / math.log(vocab_size + 1)).to(torch.float32)


def log_uniform_sample(n: int, vocab_size: int, device: torch.device) -> torch.Tensor:
    """n ids drawn (with replacement) from the log-uniform distribution over [0, V)."""
    u = torch.rand(n, device=device, dtype=torch.float64)
    ids = torch.floor(torch.exp(u * math.log(vocab_size + 1))).long() - 1
    return ids.clamp_(0, vocab_size - 1)


def _gate_order(d: int) -> torch.Tensor:
    """Row permutation between nn.LSTM's and TF's gate blocks of size ``d`` (the same both ways)."""
    return torch.cat([torch.arange(g * d, (g + 1) * d) for g in TORCH_TO_TF_GATES])


@torch.no_grad()
def import_bilm(model: TrainableBiLm, bilm: BiLm) -> None:
    """Copies an inference ``BiLm`` (e.g. a published or shipped model) into ``model``: char encoder and both LSTM
    stacks; the softmax is not part of a model directory and is left as it is. The inverse of ``export_bilm``."""
    if bilm.config.to_dict() != model.config.to_dict():
        raise ConfigError("the model to start from has a different shape (options.json) than the one being trained")
    model.char_encoder.load_state_dict(bilm.char_encoder.state_dict())
    d = model.config.lstm.dim
    p = model.config.lstm.projection_dim
    order = _gate_order(d)
    for trained_layers, source_layers in zip(model.directions, bilm.directions, strict=True):
        for lstm, source in zip(trained_layers, source_layers, strict=True):
            kernel = source.kernel.T[order]  # (4D, 2P) in nn.LSTM gate order, columns [x ; h]
            lstm.weight_ih_l0.copy_(kernel[:, :p])
            lstm.weight_hh_l0.copy_(kernel[:, p:])
            bias = source.bias[order].clone()
            bias[d : 2 * d] += FORGET_BIAS  # nn.LSTM's forget block carries TF's forget bias
            lstm.bias_ih_l0.copy_(bias)
            lstm.bias_hh_l0.zero_()
            lstm.weight_hr_l0.copy_(source.projection.T)  # (P, D)


@torch.no_grad()
def export_bilm(model: TrainableBiLm) -> BiLm:
    """The trained network in the inference layout (``BiLm``), ready for ``save_weights``."""
    bilm = BiLm(model.config)
    bilm.char_encoder.load_state_dict(model.char_encoder.state_dict())
    d = model.config.lstm.dim
    order = _gate_order(d)
    for trained_layers, target_layers in zip(model.directions, bilm.directions, strict=True):
        for lstm, target in zip(trained_layers, target_layers, strict=True):
            w_ih = lstm.weight_ih_l0[order]  # (4D, P) in TF gate order
            w_hh = lstm.weight_hh_l0[order]
            target.kernel.copy_(torch.cat([w_ih, w_hh], dim=1).T)  # (2P, 4D), rows [x ; h]
            bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0)[order].clone()
            bias[2 * d : 3 * d] -= FORGET_BIAS  # the file's B excludes TF's forget bias
            target.bias.copy_(bias)
            target.projection.copy_(lstm.weight_hr_l0.T)  # (D, P)
    return bilm
