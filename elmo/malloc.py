"""Keeps the memory of large freed tensors in the process, so that the next batch's tensors do not fault it in again.

glibc's malloc serves blocks over 32 MB (and, at first, over 128 KB) with a fresh ``mmap`` and returns them to the
kernel on ``free``; the next allocation of the same size then pays a page fault for every 4 KB page it touches. The
biLM allocates such blocks every batch (the input GEMM's output, (2, N, 4D), is 34 MB for the built-in model at
batch 64 and 0.5 GB for the published ``original`` shape), so on a CPU the first write into each of them costs about
as much as the GEMM that fills it (measured on a 2-core Xeon: 12.5 ms to fault in 34 MB, 9 ms for the GEMM).

``keep_freed_memory`` tells glibc to serve every block from its heap and not to give freed memory back (``mallopt``:
the in-process form of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``, which would have to be set before
the process starts). After a few batches the heap holds what a batch needs and a batch faults nothing in (measured,
``small`` shape, 512 sentences: 275,000 page faults per pass -> 0; 5-20% less time per pass on 2 cores; the
process keeps its peak: +80 MB resident for ``small``, +450 MB for ``original``).
``ELMO_MALLOC=system`` in the environment leaves malloc alone (``keep`` is the default; any other value is warned
about). Other C libraries (musl, macOS) are left alone too.

``freeze_imported_objects`` does the same kind of thing for Python's cycle collector: the objects that imports
created (torch, Beam and their dependencies: over a million) live as long as the process, yet every full collection
walks them again, and so does the interpreter's shutdown (measured: a process that imported ``pipeline.run`` took
1.9 s to exit, 0.4 s after ``gc.freeze``). Entry points call it once their imports are done.
This module is the one place where this project changes process-wide memory settings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import platform
import threading

from elmo.env_settings import env_choice

ENV_VARIABLE = "ELMO_MALLOC"  # "keep" (the default, also when unset) or "system": leave malloc's settings alone
_SETTINGS = ("keep", "system")  # the first is the default
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # bytes of free heap top kept before trimming (mallopt takes an int: its largest)

_lock = threading.Lock()
_applied: bool | None = None  # None: not tried yet
_frozen = False


def keep_freed_memory() -> bool:
    """Makes glibc malloc keep freed memory for reuse (see the module docstring); idempotent and thread-safe.

    Returns whether the setting is in force: False on other C libraries, when ``ELMO_MALLOC=system`` or when glibc
    refused it."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = _apply()
        return _applied


def _apply() -> bool:
    if env_choice(ENV_VARIABLE, _SETTINGS) == "system":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success
    return mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and mallopt(_M_MMAP_MAX, 0) == 1


def freeze_imported_objects() -> None:
    """Moves every object alive now out of the cycle collector's sight (``gc.freeze``), once per process.

    Meant for entry points, after their imports: the collector then walks only what the job allocates, and the
    interpreter's shutdown skips the imported objects (see the module docstring). Objects frozen here that later
    become unreachable are still freed by reference counting; only cycles among them are kept until exit."""
    global _frozen
    with _lock:
        if not _frozen:
            gc.freeze()
            _frozen = True
