"""The LSTM step's elementwise tail as one compiled CPU kernel (``elmo/csrc/lstm_cell.cpp``), built once per machine.

Eager PyTorch runs the tail of ELMo's step (gate sum, three sigmoids, two tanh, the cell update, the cell clip) as
about ten kernels; the fused kernel reads each gate once and writes the cell and the projection's input once, with
a cheaper tanh (one ``exp``). Measured on a 2-core Xeon (AVX-512, 2 threads, 64 rows, both directions): 1.9 ms ->
1.1 ms per step at the ``original`` shape (D = 4096), 0.55 -> 0.28 ms at ``small`` (D = 1024). Results differ from the
eager step only in float rounding (a few ulp; tested), and a row's bits still depend only on that row.

The kernel is compiled on first use with PyTorch's C++ extension builder (g++ and ninja; ~15 s) into
``$ELMO_EXTENSION_DIR`` (default ``~/.cache/elmo-beam/extensions``), in a folder named by a hash of the source, the
flags, the PyTorch and Python versions and the CPU's vector capability, so that a changed source or another machine
builds its own; processes that start together each build in a staging folder and move the library into place
atomically. A second entry point serves the bf16 mode (``cell_tail_bf16``: bfloat16 GEMM results in, float32 cell
and bfloat16 projection operand out, so that the step needs no separate casts). It is used for CPU tensors in
float32/float64 (and that bf16 form) when PyTorch's CPU capability is AVX2 or AVX-512 and no
gradient is needed; anything else, ``ELMO_FUSED_STEP=off``, or a failed build (warned once, with the reason) runs
the eager step.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from elmo.env_settings import env_choice

ENV_VARIABLE = "ELMO_FUSED_STEP"  # "auto" (the default, also when unset) or "off": always the eager step
DIRECTORY_VARIABLE = "ELMO_EXTENSION_DIR"
_SETTINGS = ("auto", "off")  # the first is the default
_SOURCE = Path(__file__).with_name("csrc") / "lstm_cell.cpp"
_NAME = "elmo_fused"  # the library name, and the operator namespace in the source (TORCH_LIBRARY)
_CAPABILITY_FLAGS = {  # PyTorch's CPU capability -> how ATen's vector headers are compiled for it (as in ATen)
    "AVX512": ["-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512", "-mfma"]
    + [f"-mavx512{part}" for part in ("f", "bw", "vl", "dq")],
    "AVX2": ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma", "-mf16c"],
}
_COMMON_FLAGS = ["-O3", "-fopenmp"]  # OpenMP: at::parallel_for runs on PyTorch's own thread pool
_FUSED_DTYPES = (torch.float32, torch.float64)

_lock = threading.Lock()
_loaded: bool | None = None  # None: not tried yet in this process
log = logging.getLogger(__name__)


def fused_step_available() -> bool:
    """Whether the compiled tail can run in this process (builds or loads it on the first call; thread-safe)."""
    global _loaded
    if _loaded is None:
        with _lock:
            if _loaded is None:
                _loaded = _load()
    return _loaded


def can_fuse(gates: torch.Tensor, x_part: torch.Tensor, c: torch.Tensor) -> bool:
    """Whether ``cell_tail`` takes these tensors: CPU, float32/float64, no autograd, unit stride in the last dim."""
    if gates.device.type != "cpu" or gates.dtype not in _FUSED_DTYPES:
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in (gates, x_part, c)):
        return False
    return x_part.stride(-1) == 1 and c.stride(-1) == 1 and fused_step_available()


def can_fuse_bf16(gates: torch.Tensor, x_part: torch.Tensor, c: torch.Tensor) -> bool:
    """Whether ``cell_tail_bf16`` takes these tensors: CPU, bfloat16 GEMM results, a float32 cell, no autograd."""
    if gates.device.type != "cpu" or gates.dtype != torch.bfloat16 or x_part.dtype != torch.bfloat16:
        return False
    if c.dtype != torch.float32 or (torch.is_grad_enabled() and c.requires_grad):
        return False
    return x_part.stride(-1) == 1 and c.stride(-1) == 1 and fused_step_available()


def cell_tail(
    gates: torch.Tensor, x_part: torch.Tensor, bias: torch.Tensor, c: torch.Tensor, cell_clip: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """gates (2, n, 4D) contiguous = h @ W_h, x_part (2, n, 4D) = x @ W_x, bias (2, 4D) contiguous, c (2, n, D) the
    previous cell -> cell (2, n, D) (clipped when ``cell_clip``), projection input sigmoid(o) * tanh(cell) (2, n, D)."""
    return torch.ops.elmo_fused.lstm_cell_tail(gates, x_part, bias, c, float(cell_clip or 0.0))


def cell_tail_bf16(
    gates: torch.Tensor, x_part: torch.Tensor, bias: torch.Tensor, c: torch.Tensor, cell_clip: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The bf16 mode's tail: gates (2, n, 4D) contiguous bfloat16 = h @ W_h, x_part (2, n, 4D) bfloat16 = x @ W_x,
    bias (2, 4D) float32, c (2, n, D) float32 -> cell (2, n, D) float32, projection input (2, n, D) bfloat16. The
    gate sum, the nonlinearities and the cell are float32 (the same arithmetic as the float32 tail)."""
    return torch.ops.elmo_fused.lstm_cell_tail_bf16(gates, x_part, bias, c, float(cell_clip or 0.0))


def extension_directory() -> Path:
    """Where this machine's build of the kernel lives (see the module docstring)."""
    root = os.environ.get(DIRECTORY_VARIABLE) or str(Path.home() / ".cache" / "elmo-beam" / "extensions")
    flags = _build_flags()
    key = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), " ".join(flags).encode(), torch.__version__.encode(), sys.version.encode()):
        key.update(part)
    return Path(root) / f"{_NAME}-{key.hexdigest()[:16]}"


def _build_flags() -> list[str]:
    return _COMMON_FLAGS + _CAPABILITY_FLAGS.get(torch.backends.cpu.get_cpu_capability(), [])


def _load() -> bool:
    setting = env_choice(ENV_VARIABLE, _SETTINGS)
    capability = torch.backends.cpu.get_cpu_capability()
    if setting == "off" or capability not in _CAPABILITY_FLAGS or platform.system() != "Linux":
        return False
    try:
        library = extension_directory() / f"{_NAME}.so"
        if library.is_file():
            torch.ops.load_library(str(library))
        else:
            _build_and_install(library)
        return True
    except Exception as error:  # any build or load failure: the eager step, said once
        warnings.warn(
            f"the fused LSTM step could not be built or loaded ({type(error).__name__}: {error}); using the eager "
            f"step (slower, same results up to rounding). {ENV_VARIABLE}=off silences this.",
            stacklevel=4,
        )
        return False


def _build_and_install(library: Path) -> None:
    """Builds the kernel in a private staging folder next to ``library`` (which also loads it into this process),
    then moves it into place in one atomic rename: processes that start together each build, none ever loads a
    half-written library, and the last rename wins with identical bytes."""
    from torch.utils import cpp_extension  # imported only to build: it pulls in setuptools

    library.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="build-", dir=library.parent))
    log.warning("building the fused LSTM step once for this machine into %s (about 15 s)", library.parent)
    # ninja (a pinned dependency) sits next to this interpreter, which need not be on PATH (a venv not activated);
    # the builder finds it only on PATH, so it is added there when missing
    if shutil.which("ninja") is None:
        os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    try:
        cpp_extension.load(
            name=_NAME,
            sources=[str(_SOURCE)],
            extra_cflags=_build_flags(),
            extra_ldflags=["-fopenmp"],
            build_directory=str(staging),
            is_python_module=False,  # loads the staged library into this process (still mapped after the move)
            verbose=False,
        )
        os.replace(staging / f"{_NAME}.so", library)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
