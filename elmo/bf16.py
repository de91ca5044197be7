"""Whether bfloat16 GEMMs pay off on a device: they do on GPUs that support them and on CPUs with AMX.

Measured on a CPU with AVX-512-BF16 but no AMX (issue 14): bf16 GEMMs ran at about half the float32 speed (164 vs
318 GFLOP/s at 4096^2, 2 threads), so the bf16 mode is refused there rather than run slower; AMX machines reached
about 1,400 GFLOP/s in bf16. On a CPU with neither (an AMD EPYC with AVX2 only, 2026-12-02) PyTorch emulates bf16
arithmetic: a (2, 64, 1024) @ (2, 1024, 4096) ``bmm`` took 3.2 s in bf16 against 20 ms in float32, ~150x slower.
"""

from __future__ import annotations

import torch

GEMM_DTYPE = torch.bfloat16  # the GEMM operand type of the bf16 mode
CPU_FLAGS_FILE = "/proc/cpuinfo"
AMX_FLAG = "amx_bf16"
NATIVE_BF16_FLAG = "avx512_bf16"  # bf16 dot products without AMX: about half the float32 speed


def native_bf16_cpu(flags: set[str] | None = None) -> bool:
    """Whether this CPU computes bf16 in hardware (AMX or AVX-512-BF16); without either PyTorch emulates it."""
    flags = cpu_flags() if flags is None else flags
    return AMX_FLAG in flags or NATIVE_BF16_FLAG in flags


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
        if NATIVE_BF16_FLAG in flags:
            return "this CPU has AVX-512-BF16 but no AMX: bf16 GEMMs run slower than float32 here (half the speed)"
        return (
            "this CPU has no AMX and no AVX-512-BF16: bf16 arithmetic is emulated here, its GEMMs run ~150x slower "
            "than float32"
        )
    return f"bf16 is not offered on {device.type}"
