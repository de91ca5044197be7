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

from elmo.chars import bos_ids, eos_ids
from elmo.config import N_CHARACTERS_INFERENCE, ElmoConfig

FORGET_BIAS = 1.0  # TensorFlow's LSTMCell adds this to the forget gate; it is not in the weights file.


class ClipCounter:
    """Counts how many memory-cell and projection elements were clipped (a diagnostic, off by default)."""

    def __init__(self) -> None:
        self.cell_clipped = 0
        self.cell_total = 0
        self.proj_clipped = 0
        self.proj_total = 0

    def add(self, cell: torch.Tensor, cell_clip: float | None, proj: torch.Tensor, proj_clip: float | None) -> None:
        """Counts elements of the unclipped ``cell`` (N, D) and ``proj`` (N, P) of the N rows that ran a step."""
        if cell_clip:
            self.cell_clipped += int((cell.abs() > cell_clip).sum())
        if proj_clip:
            self.proj_clipped += int((proj.abs() > proj_clip).sum())
        self.cell_total += cell.numel()
        self.proj_total += proj.numel()


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

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        """char_ids (N, C) int64 -> token representations (N, P)."""
        x = self.char_embedding(char_ids).transpose(1, 2)  # (N, E, C)
        pooled = [self.activation(conv(x).amax(dim=-1)) for conv in self.convolutions]  # each (N, n_i)
        h = torch.cat(pooled, dim=-1)  # (N, F)
        n_filters = h.shape[-1]
        for kernel, bias in zip(self.highway_kernels, self.highway_biases, strict=True):
            z = torch.addmm(bias, h, kernel)  # (N, 2F)
            transform, carry = z[:, :n_filters], z[:, n_filters:]
            gate = torch.sigmoid(carry)  # the TF "carry" gate multiplies the transform branch
            h = gate * torch.relu(transform) + (1.0 - gate) * h
        return self.projection(h) if self.has_projection else h  # (N, P)


class LstmLayer(nn.Module):
    """One unidirectional LSTM layer with a projected, clipped hidden state (TF LSTMCell(num_proj=P))."""

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

    def forward(
        self,
        inputs: torch.Tensor,
        active_rows: list[int],
        h: torch.Tensor,
        c: torch.Tensor,
        clip_counter: ClipCounter | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Runs left to right over right-padded rows sorted longest first (inference only: updates in place).

        inputs (B, S, in), h (B, P), c (B, D); ``active_rows[t]`` = rows still running at step t (non-increasing),
        so each step computes only those rows, as AllenNLP does. -> outputs (B, S, P), zero past each row's end,
        and each row's final (h, c): its state after its last step.
        """
        d = self.cell_dim
        bias = self.bias.clone()
        bias[2 * d : 3 * d] += FORGET_BIAS
        x_part = torch.matmul(inputs, self.kernel[: self.input_dim]) + bias  # (B, S, 4D)
        h_kernel = self.kernel[self.input_dim :]  # (P, 4D)
        h, c = h.clone(), c.clone()
        outputs = inputs.new_zeros(inputs.shape[0], inputs.shape[1], h.shape[-1])  # (B, S, P)
        for t, n in enumerate(active_rows):
            if n == 0:
                break
            z = torch.addmm(x_part[:n, t], h[:n], h_kernel)  # (n, 4D)
            i, j, f, o = z.split(d, dim=-1)
            cell = torch.sigmoid(i) * torch.tanh(j) + torch.sigmoid(f) * c[:n]  # (n, D)
            raw_cell = cell
            if self.cell_clip:
                cell = cell.clamp(-self.cell_clip, self.cell_clip)
            hidden = torch.matmul(torch.sigmoid(o) * torch.tanh(cell), self.projection)  # (n, P)
            raw_hidden = hidden
            if self.proj_clip:
                hidden = hidden.clamp(-self.proj_clip, self.proj_clip)
            if clip_counter is not None:
                clip_counter.add(raw_cell, self.cell_clip, raw_hidden, self.proj_clip)
            c[:n] = cell
            h[:n] = hidden
            outputs[:n, t] = hidden
        return outputs, h, c


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
    positions, plus the final LSTM state (for stateful use).
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
        self.clip_counter: ClipCounter | None = None

    def zero_state(self, batch_size: int) -> BiLmState:
        """All-zero initial state for ``batch_size`` rows."""
        lstm = self.config.lstm
        ref = self.char_encoder.char_embedding.weight
        return BiLmState(
            ref.new_zeros(2, lstm.n_layers, batch_size, lstm.projection_dim),
            ref.new_zeros(2, lstm.n_layers, batch_size, lstm.dim),
        )

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
        """Char encoder over every position: (B, S, C) -> (B, S, P), each distinct token encoded once."""
        batch, steps, width = char_ids.shape
        flat = char_ids.reshape(-1, width)  # (B*S, C)
        unique, inverse = torch.unique(flat, dim=0, return_inverse=True)  # (U, C), (B*S,)
        encoded = self.char_encoder(unique)  # (U, P)
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
        state_h, state_c = state.h[:, :, order], state.c[:, :, order]

        per_direction = []
        final_h, final_c = [], []
        for direction, layers in enumerate(self.directions):
            inputs = token_repr if direction == 0 else reverse_within_length(token_repr, lengths)
            outputs, hs, cs = [], [], []
            for index, layer in enumerate(layers):
                out, h, c = layer(
                    inputs, active_rows, state_h[direction, index], state_c[direction, index], self.clip_counter
                )
                if index > 0 and self.config.lstm.use_skip_connections:
                    out = out + inputs
                outputs.append(out)
                hs.append(h)
                cs.append(c)
                inputs = out
            if direction == 1:
                outputs = [reverse_within_length(o, lengths) for o in outputs]
            per_direction.append(outputs)
            final_h.append(torch.stack(hs))
            final_c.append(torch.stack(cs))

        layers = [torch.cat([token_repr, token_repr], dim=-1)]  # (B, S, 2P): layer 0 duplicated
        layers += [torch.cat([fwd, bwd], dim=-1) for fwd, bwd in zip(*per_direction, strict=True)]
        stacked = torch.stack(layers)[:, restore, 1 : tokens + 1]  # (L+1, B, T, 2P), input order, no boundaries
        token_mask = (char_ids > 0).any(-1)  # (B, T)
        stacked = stacked * token_mask.unsqueeze(0).unsqueeze(-1)
        final = BiLmState(torch.stack(final_h)[:, :, restore], torch.stack(final_c)[:, :, restore])
        return stacked, final
