"""ELMo's scalar mix (paper Eq. 1) and the published mixing recipes.

``ELMo = gamma * sum_j softmax(w)_j * h_j`` over the L+1 biLM layers, optionally with each layer normalised first
(one mean and variance per layer over all unmasked elements of the batch, as AllenNLP and bilm-tf do).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from elmo.errors import ConfigError

LAYER_NORM_EPS = 1e-12  # bilm-tf and AllenNLP 0.9 (AllenNLP 2.x uses 1e-13)


def finite_number(value: object, what: str) -> float:
    """``value`` as a float; raises ``ConfigError`` (a ``ValueError``) naming ``what`` unless it is a finite real
    number (NaN, inf, overflowing literals like ``1e309``, strings and bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{what} must be a number, not {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be a finite number, not {value!r}")
    return number


def masked_layer_norm(layer: torch.Tensor, mask: torch.Tensor, eps: float = LAYER_NORM_EPS) -> torch.Tensor:
    """Normalises one layer (B, T, W) with a single mean/variance over all elements where ``mask`` (B, T)."""
    m = mask.unsqueeze(-1).to(layer.dtype)  # (B, T, 1)
    count = m.sum() * layer.shape[-1]
    if not bool(count > 0):
        raise ValueError("layer norm needs at least one unmasked token (the mask is all False)")
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
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ConfigError(f"ScalarMix n_layers must be a positive integer, not {n_layers!r}")
        if initial_weights is not None and len(initial_weights) != n_layers:
            raise ConfigError(f"{len(initial_weights)} mix weights given for {n_layers} layers")
        values = [0.0] * n_layers if initial_weights is None else list(initial_weights)
        weights = [finite_number(w, f"mix weight {i}") for i, w in enumerate(values)]
        self.weights = nn.Parameter(torch.tensor(weights), requires_grad=trainable)
        self.gamma = nn.Parameter(torch.tensor(finite_number(gamma, "mix gamma")), requires_grad=trainable)
        self.do_layer_norm = do_layer_norm

    def forward(self, layers: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """layers (L+1, B, T, W), mask (B, T) -> (B, T, W)."""
        if layers.dim() != 4 or layers.shape[0] != self.weights.shape[0]:
            raise ValueError(f"ScalarMix of {self.weights.shape[0]} layers got layers of shape {tuple(layers.shape)}")
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
        """Refuses unknown kinds, missing or non-finite weights and a non-finite gamma (``ConfigError``)."""
        if self.kind not in ("all", "top", "average", "weights"):
            raise ConfigError(f"unknown layer choice {self.kind!r}: use all, top, average or weights")
        if self.kind == "weights" and not self.weights:
            raise ConfigError("layer choice 'weights' needs the mix weights")
        if self.kind != "weights" and self.weights:
            raise ConfigError(f"layer choice {self.kind!r} takes no mix weights")
        if isinstance(self.weights, (str, bytes)) or not isinstance(self.weights, Sequence):
            raise ConfigError(f"layer mix weights must be a sequence of numbers, not {self.weights!r}")
        weights = tuple(finite_number(w, f"layer mix weight {i}") for i, w in enumerate(self.weights))
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "gamma", finite_number(self.gamma, "layer mix gamma"))

    @classmethod
    def parse(cls, text: str) -> LayerChoice:
        """``all``, ``top``, ``average``, or comma-separated pre-softmax weights such as ``0,0,1`` (or
        ``0,0,1;gamma=0.5``). Raises ``ConfigError`` (a ``ValueError``) naming a malformed or non-finite value."""
        if not isinstance(text, str):
            raise TypeError(f"layer choice must be a string or a LayerChoice, not {type(text).__name__}")
        text = text.strip()
        if text in ("all", "top", "average"):
            return cls(text)
        weights_text, separator, gamma_text = text.partition(";")
        gamma = 1.0
        if separator:
            gamma = _parse_number(gamma_text.strip().removeprefix("gamma="), f"gamma in layer choice {text!r}")
        try:
            values = [float(w) for w in weights_text.split(",")]
        except ValueError:
            raise ConfigError(f"layer choice {text!r} is neither all/top/average nor comma-separated weights") from None
        for piece, value in zip(weights_text.split(","), values, strict=True):
            if not math.isfinite(value):
                raise ConfigError(f"layer mix weight {piece.strip()!r} in {text!r} is not a finite number")
        return cls("weights", tuple(values), gamma)

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
        raise ConfigError(f"{len(choice.weights)} mix weights given for {layers.shape[0]} layers")
    w = np.asarray(choice.weights, dtype=np.float64)
    s = np.exp(w - w.max())
    s = (s / s.sum()).astype(layers.dtype)
    return (choice.gamma * np.tensordot(s, layers, axes=1)).astype(layers.dtype)


def _parse_number(piece: str, what: str) -> float:
    """A finite float from ``piece``; ``ConfigError`` naming ``what`` and ``piece`` otherwise."""
    try:
        value = float(piece)
    except ValueError:
        raise ConfigError(f"{what}: {piece!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{what}: {piece!r} is not a finite number")
    return value
