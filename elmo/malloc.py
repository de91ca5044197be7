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
``pause_collector_while_command_imports`` keeps the collector off before that, while a command of this project
(``COMMANDS``) imports its modules: the collector's full passes during those imports walk every object created so
far, over and over, and find nothing to free (measured on a 2-core AMD EPYC: ``import torch, apache_beam`` 7.5-8.7 s
-> 6.5-6.6 s; a one-sentence ``python -m pipeline.run`` 10.2-10.7 s -> 8.1-8.3 s). The package ``__init__``s call
it; it acts only in a process started as ``python -m <command>``, during the import ``runpy`` makes before running
the command, and ``freeze_imported_objects`` (every command's first call) turns the collector back on.
This module is the one place where this project changes process-wide memory settings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import platform
import sys
import threading

from elmo.env_settings import env_choice

ENV_VARIABLE = "ELMO_MALLOC"  # "keep" (the default, also when unset) or "system": leave malloc's settings alone
_SETTINGS = ("keep", "system")  # the first is the default
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # bytes of free heap top kept before trimming (mallopt takes an int: its largest)

# The ``python -m`` commands whose entry point calls ``freeze_imported_objects`` before anything else (tested)
COMMANDS = frozenset(
    {
        "pipeline.run",
        "elmo.embed",
        "elmo.training.train",
        "search.index",
        "search.query",
        "search.plot",
        "search.senses",
    }
)

_lock = threading.Lock()
_applied: bool | None = None  # None: not tried yet
_frozen = False
_paused = False  # the collector is off until freeze_imported_objects


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
    global _frozen, _paused
    with _lock:
        if not _frozen:
            gc.freeze()
            _frozen = True
        if _paused:
            gc.enable()
            _paused = False


def command_being_started(argv: list[str] | None = None, argv0: str | None = None) -> str | None:
    """The module of ``python [options] -m MODULE ...`` while ``runpy`` imports its package (``sys.argv[0]`` is
    still ``"-m"`` then), else None. ``argv``/``argv0`` default to ``sys.orig_argv``/``sys.argv[0]``."""
    argv = list(getattr(sys, "orig_argv", [])) if argv is None else argv
    argv0 = (sys.argv[0] if sys.argv else None) if argv0 is None else argv0
    if argv0 != "-m":
        return None
    for i, arg in enumerate(argv[1:], 1):
        if arg == "-m":
            return argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith("-m"):
            return arg[2:]
    return None


def pause_collector_while_command_imports(command: str | None = None) -> bool:
    """Turns the cycle collector off when this process is importing one of ``COMMANDS`` to run it (``command``:
    ``command_being_started()`` unless given), until ``freeze_imported_objects``; returns whether it did. Called
    by the package ``__init__``s; anywhere else a no-op."""
    global _paused
    command = command_being_started() if command is None else command
    if command not in COMMANDS:
        return False
    with _lock:
        if _frozen or _paused or not gc.isenabled():
            return False
        gc.disable()
        _paused = True
        return True
