"""ELMo's scalar mix (paper Eq. 1) and the published mixing recipes.

``ELMo = gamma * sum_j softmax(w)_j * h_j`` over the L+1 biLM layers, optionally with each layer normalised first
(one mean and variance per layer over all unmasked elements of the batch, as AllenNLP and bilm-tf do).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

LAYER_NORM_EPS = 1e-12  # bilm-tf and AllenNLP 0.9 (AllenNLP 2.x uses 1e-13)


def masked_layer_norm(layer: torch.Tensor, mask: torch.Tensor, eps: float = LAYER_NORM_EPS) -> torch.Tensor:
    """Normalises one layer (B, T, W) with a single mean/variance over all elements where ``mask`` (B, T)."""
    m = mask.unsqueeze(-1).to(layer.dtype)  # (B, T, 1)
    count = m.sum() * layer.shape[-1]
    mean = (layer * m).sum() / count
    var = (((layer - mean) * m) ** 2).sum() / count
    return (layer - mean) / torch.sqrt(var + eps)


class ScalarMix(nn.Module):
    """Trainable ``gamma * sum_j softmax(w)_j * h_j``; ``weights`` are pre-softmax scalars (AllenNLP convention)."""

    def __init__(
        self,
        n_layers: int,
        do_layer_norm: bool = False,
        initial_weights: Sequence[float] | None = None,
        trainable: bool = True,
        gamma: float = 1.0,
    ):
        super().__init__()
        if initial_weights is not None and len(initial_weights) != n_layers:
            raise ValueError(f"{len(initial_weights)} mix weights given for {n_layers} layers")
        weights = torch.tensor(list(initial_weights) if initial_weights is not None else [0.0] * n_layers)
        self.weights = nn.Parameter(weights, requires_grad=trainable)
        self.gamma = nn.Parameter(torch.tensor(float(gamma)), requires_grad=trainable)
        self.do_layer_norm = do_layer_norm

    def forward(self, layers: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """layers (L+1, B, T, W), mask (B, T) -> (B, T, W)."""
        s = torch.softmax(self.weights.to(layers.dtype), dim=0)
        if self.do_layer_norm:
            if mask is None:
                raise ValueError("layer norm needs the token mask")
            layers = torch.stack([masked_layer_norm(layer, mask) for layer in layers])
        return self.gamma.to(layers.dtype) * torch.einsum("l,lbtw->btw", s, layers)


@dataclass(frozen=True)
class LayerChoice:
    """Which output a user asked for: ``all`` layers, the ``top`` one, their ``average``, or ``weights``.

    For ``weights``, ``weights`` are pre-softmax mix scalars (like AllenNLP's ``scalar_mix_parameters``) and
    ``gamma`` scales the result.
    """

    kind: str = "all"
    weights: tuple[float, ...] = ()
    gamma: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("all", "top", "average", "weights"):
            raise ValueError(f"unknown layer choice {self.kind!r}: use all, top, average or weights")
        if self.kind == "weights" and not self.weights:
            raise ValueError("layer choice 'weights' needs the mix weights")

    @classmethod
    def parse(cls, text: str) -> LayerChoice:
        """``all``, ``top``, ``average``, or comma-separated pre-softmax weights such as ``0,0,1`` (or
        ``0,0,1;gamma=0.5``)."""
        if text in ("all", "top", "average"):
            return cls(text)
        gamma = 1.0
        if ";" in text:
            text, _, gamma_text = text.partition(";")
            gamma = float(gamma_text.removeprefix("gamma="))
        try:
            weights = tuple(float(w) for w in text.split(","))
        except ValueError:
            raise ValueError(f"layer choice {text!r} is neither all/top/average nor comma-separated weights") from None
        return cls("weights", weights, gamma)

    def __str__(self) -> str:
        if self.kind != "weights":
            return self.kind
        text = ",".join(repr(w) for w in self.weights)
        return text if self.gamma == 1.0 else f"{text};gamma={self.gamma!r}"


def apply_layer_choice(layers: np.ndarray, choice: LayerChoice) -> np.ndarray:
    """One sentence's layers (L+1, T, W) -> (L+1, T, W) for ``all``, else (T, W).

    ``average`` is the plain mean of the layers (the ``allennlp elmo --average`` output), ``top`` the last layer.
    """
    if choice.kind == "all":
        return layers
    if choice.kind == "top":
        return layers[-1]
    if choice.kind == "average":
        return layers.mean(axis=0)
    if len(choice.weights) != layers.shape[0]:
        raise ValueError(f"{len(choice.weights)} mix weights given for {layers.shape[0]} layers")
    w = np.asarray(choice.weights, dtype=np.float64)
    s = np.exp(w - w.max())
    s = (s / s.sum()).astype(layers.dtype)
    return (choice.gamma * np.tensordot(s, layers, axes=1)).astype(layers.dtype)
