"""Whether bfloat16 GEMMs pay off on a device: they do on GPUs that support them and on CPUs with AMX.

Measured on a CPU with AVX-512-BF16 but no AMX (issue 14): bf16 GEMMs ran at about half the float32 speed (164 vs
318 GFLOP/s at 4096^2, 2 threads), so the bf16 mode is refused there rather than run slower; AMX machines reached
about 1,400 GFLOP/s in bf16.

``WeightCopies`` keeps the bfloat16 copies of weights that the bf16 mode multiplies with, so that they are cast once
and not every batch (the published ``original`` shape: ~190 MB of copies, remade only when a weight changes).
"""

from __future__ import annotations

import torch

GEMM_DTYPE = torch.bfloat16  # the GEMM operand type of the bf16 mode
CPU_FLAGS_FILE = "/proc/cpuinfo"
AMX_FLAG = "amx_bf16"


def cpu_flags(path: str = CPU_FLAGS_FILE) -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty when they cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_refusal(device: torch.device, flags: set[str] | None = None) -> str | None:
    """Why bf16 would not be faster than float32 on ``device``, or None when it is worth using."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return None
        return f"{torch.cuda.get_device_name(device)} does not support bfloat16"
    if device.type == "cpu":
        flags = cpu_flags() if flags is None else flags
        if AMX_FLAG in flags:
            return None
        kind = "AVX-512-BF16 but no AMX" if "avx512_bf16" in flags else "no AMX and no AVX-512-BF16"
        return f"this CPU has {kind}: bf16 GEMMs run slower than float32 here (about half the speed measured)"
    return f"bf16 is not offered on {device.type}"


def weights_stamp(weights: list[torch.Tensor]) -> tuple:
    """What identifies the current values of ``weights``: storage, in-place version, dtype and device of each (a
    weight replaced, moved, cast or changed in place gets a new stamp)."""
    return tuple((w.data_ptr(), w._version, w.dtype, w.device, tuple(w.shape)) for w in weights)


class WeightCopies:
    """Contiguous copies of some weights in another dtype, made on first use and remade when a weight changes."""

    def __init__(self, dtype: torch.dtype = GEMM_DTYPE):
        self.dtype = dtype
        self._stamp: tuple | None = None
        self._copies: list[torch.Tensor] = []

    def of(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        """``weights`` in ``dtype``, contiguous, detached from autograd: the same tensors while nothing changed."""
        stamp = weights_stamp(weights)
        if stamp != self._stamp:
            self._copies = [w.detach().to(self.dtype).contiguous() for w in weights]
            self._stamp = stamp
        return self._copies
