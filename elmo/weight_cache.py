"""Values derived from a model's weights (bfloat16 copies, re-laid-out matrices), made once and kept until a weight
changes, so that a forward pass does not redo them every batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def weights_stamp(weights: list[torch.Tensor]) -> tuple:
    """What identifies the current values of ``weights``: storage, in-place version, dtype, device and shape of each
    (a weight replaced, moved, cast or changed in place gets a new stamp)."""
    return tuple((w.data_ptr(), w._version, w.dtype, w.device, tuple(w.shape)) for w in weights)


class DerivedWeights:
    """``make(weights, *key)`` computed on first use and again only when a weight or the key changes.

    ``make`` runs without autograd and should return new tensors (not views of the weights). Thread-safe in the
    way a shared model needs: two threads may both compute a missing value, and each returns a complete one."""

    def __init__(self, make: Callable[..., Any]):
        self._make = make
        self._stamp: tuple | None = None
        self._value: Any = None

    def clear(self) -> None:
        """Drops the kept value (its memory), to be made again on the next ``of``."""
        self._value, self._stamp = None, None

    def of(self, weights: list[torch.Tensor], *key: Any) -> Any:
        """The derived value for the current ``weights`` (and ``key``, e.g. a dtype)."""
        stamp = (weights_stamp(weights), key)
        if stamp != self._stamp:
            with torch.no_grad():
                value = self._make(weights, *key)
            self._value, self._stamp = value, stamp  # the value first: a reader that sees the stamp sees its value
        return self._value


def cast_copies(weights: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    """``weights`` as contiguous copies in ``dtype`` (a ``DerivedWeights`` maker)."""
    return [w.detach().to(dtype).contiguous() for w in weights]
