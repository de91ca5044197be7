"""How much memory a local run (Beam's ``FnApiRunner``) needs, and the check that refuses one that cannot fit.

The local runner keeps every PCollection that crosses a fused stage boundary in its own memory (no spilling to
disk), and a grouping stage holds all of its input at once, decoded, and then once more re-encoded as one blob:
the window vectors wait in the buffer of ``AssembleSentences``' join by sentence id until embedding has finished
(the peak without ``--token_vectors``), and every output record waits in the ``GroupByKey`` that Beam's file
sinks add for a fixed ``num_shards`` (the peak with ``--token_vectors``: the Arrow tables hold every token
vector). Without ``--token_vectors`` a window that is its whole sentence now crosses the join as its one sentence
vector (transforms/assemble.py), so ordinary text holds far less there than the fit below assumes; the estimate
keeps the all-token-vectors coefficient as an upper bound, because text made only of sentences longer than a
window still sends every token's vector. So a local run's peak grows with the corpus, not with batch or bundle
sizes, and a big enough input is killed by the OS mid-run.
``estimate_local_peak_bytes`` turns the input sizes (from the plan) into an estimated peak resident set, with
coefficients measured by ``scripts/measure_local_memory.py`` (figures in docs/local-memory.md), and
``check_local_memory`` refuses the run up front, naming the runners that do not hold the whole corpus.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable

from elmo.errors import UsageError

# ---------------------------------------------------------------------------------------------------------------
# Coefficients. Measured 2026-11-30 with scripts/measure_local_memory.py (7 runs) on the shared 2-core x86_64
# build box (Linux, 23.5 GiB RAM, Python 3.11, Beam 2.62.0 FnApiRunner, torch 2.15 CPU), code of commit d596f14,
# model elmo-en-small (2P = 256, L+1 = 3), sample_data/sotu repeated to 46k, 92k and 208k tokens of
# English; peak resident memory of the process tree sampled every 0.1 s. Least-squares fit of the four runs
# without --token_vectors (residuals <= 27 MiB); the token-vector and worker terms from one run each.
# Table, fit and phases: docs/local-memory.md.
# ---------------------------------------------------------------------------------------------------------------
BYTES_PER_TOKEN = 5.4  # English input bytes per token of the built-in tokenizer (5.43 on the sample)
BASE_BYTES = 1060 * 2**20  # the launcher: Python, torch, Beam, the model, before any data (intercept of the fit)
WORKER_BASE_BYTES = 420 * 2**20  # each SDK worker process with multi_processing (torch + Beam + model: 411 MiB)
TEXT_BYTES_PER_INPUT_BYTE = 140.0  # documents, tokens, offsets and windows held between stages, per input byte
# Phase 1, embedding and the join by sentence id of AssembleSentences: the float32 window vectors (WindowVectors) held
# this many times over (decoded in the grouping table, then re-encoded as one blob, then read back).
WINDOW_VECTOR_COPIES = 4.8
# Phase 2, assembling and writing: the grouped blob of window vectors is still held, and the GroupByKey of the
# Parquet sink (fixed num_shards) holds every output row, token vectors included.
WRITE_WINDOW_VECTOR_COPIES = 2.8
WRITE_TOKEN_VECTOR_COPIES = 3.0
MULTI_PROCESS_DATA_FACTOR = 2.3  # data held by the runner and again by the worker processes (one run, 2 workers)

# Compressed inputs whose uncompressed size cannot be read cheaply are assumed to expand by this much.
COMPRESSION_RATIO = 4.0
MAX_DEFLATE_RATIO = 1032  # deflate's largest expansion: a bigger "ISIZE" is not a real gzip trailer
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".deflate", ".zst", ".zstd", ".xz", ".lzma")
DTYPE_BYTES = {"float32": 4, "float16": 2}
UNLIMITED = 2**60  # cgroup limits at or above this mean "no limit" (v1 writes 9223372036854771712)


class LocalMemoryError(UsageError):
    """The local runner would need more memory than this machine (or its cgroup) has available."""


# ----------------------------------------------------------------------------------------------- input sizes
def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def gzip_uncompressed_size(path: str, compressed_size: int | None = None) -> int:
    """Uncompressed size of a local gzip file from its ISIZE trailer (the last 4 bytes: size mod 2**32).

    The trailer gives only the last member's size mod 2**32: when it is below the compressed size (several
    members, or wrapped) or above what deflate can reach (``MAX_DEFLATE_RATIO`` x: a truncated file's last bytes
    are not a trailer), the file is taken as ``COMPRESSION_RATIO`` times its compressed size; for files so large
    that the size may have wrapped, the larger of the two readings is used.
    """
    size = os.path.getsize(path) if compressed_size is None else compressed_size
    if size < 18:  # smaller than an empty gzip member: nothing in it
        return 0
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        (isize,) = struct.unpack("<I", f.read(4))
    guess = int(size * COMPRESSION_RATIO)
    if isize < size or isize > size * MAX_DEFLATE_RATIO:
        return guess
    if guess >= 2**32:
        return max(isize, guess)
    return isize


def uncompressed_size(path: str, size: int) -> int:
    """The bytes a shard expands to when read: its size, a local gzip's ISIZE, or ``COMPRESSION_RATIO`` x size."""
    lower = path.lower()
    if not lower.endswith(COMPRESSED_SUFFIXES):
        return size
    if lower.endswith(".gz") and not _is_remote(path):
        local = path[len("file://") :] if path.startswith("file://") else path
        try:
            return gzip_uncompressed_size(local, size)
        except OSError:
            pass
    return int(size * COMPRESSION_RATIO)


def input_bytes(files: Iterable[tuple[str, int]]) -> int:
    """Total uncompressed bytes of the plan's ``(path, size)`` files."""
    return sum(uncompressed_size(path, size) for path, size in files)


# ------------------------------------------------------------------------------------------------ estimate
def _vector_layers(layers: str, n_layers: int) -> int:
    return n_layers if layers == "all" else 1


def bytes_per_input_byte(
    *, token_vectors: bool, layers: str, output_dim: int, n_layers: int, dtype: str, workers: int = 1
) -> float:
    """Peak memory per uncompressed input byte on the local runner (the slope of the estimate)."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, not {dtype!r}")
    per_token_window = 4 * output_dim * _vector_layers(layers, n_layers)  # WindowVectors are always float32
    per_token_stored = DTYPE_BYTES[dtype] * output_dim * _vector_layers(layers, n_layers) if token_vectors else 0
    per_token = max(  # the peak is the larger of the two phases
        WINDOW_VECTOR_COPIES * per_token_window,
        WRITE_WINDOW_VECTOR_COPIES * per_token_window + WRITE_TOKEN_VECTOR_COPIES * per_token_stored,
    )
    slope = TEXT_BYTES_PER_INPUT_BYTE + per_token / BYTES_PER_TOKEN
    return slope * (MULTI_PROCESS_DATA_FACTOR if workers > 1 else 1.0)


def estimate_local_peak_bytes(
    files: Iterable[tuple[str, int]],
    *,
    token_vectors: bool,
    layers: str,
    output_dim: int,
    n_layers: int,
    dtype: str,
    workers: int = 1,
    token_cache_bytes: int = 0,
) -> int:
    """Estimated peak memory (bytes, all processes of the run together) of a local run over ``files``.

    ``files``: the plan's ``[(path, size_in_bytes)]`` (``RunPlan.files``); ``layers``: the normalised layer choice
    (``all`` stores L+1 = ``n_layers`` vectors per token); ``output_dim``: 2P; ``workers``: SDK worker processes
    (``--direct_num_workers`` with ``multi_processing``; 1 otherwise: the launcher runs the stages itself);
    ``token_cache_bytes``: the full token cache of one model-holding process (``--token_cache_size`` x 4P).
    """
    workers = max(1, workers)
    slope = bytes_per_input_byte(
        token_vectors=token_vectors,
        layers=layers,
        output_dim=output_dim,
        n_layers=n_layers,
        dtype=dtype,
        workers=workers,
    )
    processes = workers if workers > 1 else 0  # workers > 1: SDK worker processes besides the launcher
    caches = token_cache_bytes * max(processes, 1)
    return int(BASE_BYTES + processes * WORKER_BASE_BYTES + caches + slope * input_bytes(files))


# ------------------------------------------------------------------------------------------ available memory
def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= UNLIMITED else value


def _stat_field(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    match = re.search(rf"^{re.escape(name)} (\d+)$", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def meminfo_available_bytes(proc: str = "/proc") -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` (bytes); ``MemFree + Cached`` on old kernels; None if unreadable."""
    text = _read(os.path.join(proc, "meminfo"))
    if text is None:
        return None
    fields = {}
    for line in text.splitlines():
        match = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if match:
            fields[match.group(1)] = int(match.group(2)) * 1024
    if "MemAvailable" in fields:
        return fields["MemAvailable"]
    if "MemFree" in fields:
        return fields["MemFree"] + fields.get("Cached", 0)
    return None


def _own_cgroup_paths(proc: str) -> dict[str, str]:
    """``/proc/self/cgroup`` -> {controller or '' (v2): path}."""
    paths = {}
    for line in (_read(os.path.join(proc, "self", "cgroup")) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def _ancestors(root: str, path: str) -> list[str]:
    """``root/path``, its parents up to ``root``, and ``root`` (a namespaced cgroup mount shows its own as root)."""
    parts = [p for p in path.strip("/").split("/") if p]
    dirs = [os.path.join(root, *parts[:i]) for i in range(len(parts), 0, -1)]
    return [*dirs, root]


def cgroup_available_bytes(proc: str = "/proc", cgroup_root: str = "/sys/fs/cgroup") -> int | None:
    """Memory left under this process's cgroup limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``): the limit
    minus the usage that cannot be reclaimed (usage less inactive page cache); None when no limit is set."""
    paths = _own_cgroup_paths(proc)
    best: int | None = None
    # cgroup v2: the tightest memory.max from our cgroup up to the root
    for directory in _ancestors(cgroup_root, paths.get("", "/")):
        limit = _int_or_none(_read(os.path.join(directory, "memory.max")))
        if limit is None:
            continue
        usage = _int_or_none(_read(os.path.join(directory, "memory.current"))) or 0
        inactive = _stat_field(_read(os.path.join(directory, "memory.stat")), "inactive_file") or 0
        left = max(0, limit - max(0, usage - inactive))
        best = left if best is None else min(best, left)
    if best is not None:
        return best
    # cgroup v1: the memory controller's hierarchy (hierarchical_memory_limit is already the tightest ancestor)
    v1_root = os.path.join(cgroup_root, "memory")
    for directory in _ancestors(v1_root, paths.get("memory", "/")):
        stat = _read(os.path.join(directory, "memory.stat"))
        limit = _int_or_none(str(_stat_field(stat, "hierarchical_memory_limit") or "")) or _int_or_none(
            _read(os.path.join(directory, "memory.limit_in_bytes"))
        )
        if limit is None:
            if stat is not None or os.path.exists(os.path.join(directory, "memory.limit_in_bytes")):
                return None  # our cgroup is readable and unlimited
            continue
        usage = _int_or_none(_read(os.path.join(directory, "memory.usage_in_bytes"))) or 0
        inactive = _stat_field(stat, "total_inactive_file") or _stat_field(stat, "inactive_file") or 0
        return max(0, limit - max(0, usage - inactive))
    return None


def available_memory_bytes(proc: str = "/proc", cgroup_root: str = "/sys/fs/cgroup") -> int:
    """Memory a new run can use: the smaller of what the cgroup limit leaves and ``MemAvailable``.

    Off Linux (no /proc): physical memory from ``os.sysconf`` where it exists, else 0, which means "unknown"
    (``check_local_memory`` then does not refuse).
    """
    candidates = [v for v in (cgroup_available_bytes(proc, cgroup_root), meminfo_available_bytes(proc)) if v]
    if candidates:
        return min(candidates)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0


# ---------------------------------------------------------------------------------------------------- check
def _size(n: float) -> str:
    """Bytes as a short human figure: 9.6 GB, 48 MB, 310 kB (decimal units)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} bytes"


def describe_settings(*, token_vectors: bool, layers: str, n_layers: int, workers: int = 1) -> str:
    """'3 layers with --token_vectors, 2 worker processes' style summary of what drives the estimate."""
    parts = [f"{n_layers} layers" if layers == "all" else f"layers={layers}"]
    parts[0] += " with --token_vectors" if token_vectors else " without --token_vectors"
    if workers > 1:
        parts.append(f"{workers} worker processes")
    return ", ".join(parts)


def check_local_memory(
    estimate: int,
    available: int,
    *,
    limit_fraction: float = 0.8,
    input_size: int | None = None,
    settings: str = "",
    base: int = BASE_BYTES,
    bound_flag: str | None = None,
) -> None:
    """Raises ``LocalMemoryError`` when ``estimate`` exceeds ``limit_fraction`` of ``available`` bytes.

    ``available`` <= 0 means unknown: no check. ``input_size`` (uncompressed input bytes), ``settings``
    (``describe_settings(...)``) and ``base`` (the estimate's fixed part) only make the message more telling: the
    cost per MB of text and the largest input that would fit. ``bound_flag``: ``available`` is an explicit bound set
    by this flag rather than what the machine has (pass ``limit_fraction=1.0`` with it).
    """
    if available <= 0 or estimate <= limit_fraction * available:
        return
    usable = limit_fraction * available
    split = "split the input into smaller runs"
    if input_size:
        per_byte = max(estimate - base, 1) / input_size  # bytes per input byte = MB per MB
        what = f"for {_size(input_size)} of input (about {per_byte:.0f} MB per MB of text"
        what += f"; {settings})" if settings else ")"
        if usable > base:
            split += f" of at most about {_size((usable - base) / per_byte)} each"
    else:
        what = f"({settings})" if settings else ""
    if bound_flag:
        room = f"the bound set by {bound_flag} is {_size(available)}"
    else:
        room = f"{_size(available)} is available, {limit_fraction:.0%} usable ({_size(usable)})"
    raise LocalMemoryError(
        f"the local runner would need about {_size(estimate)} {what}; {room}. The local runner holds every "
        "document's vectors in memory at once. Run on Flink (./run_pipeline.sh flink --flink_master HOST:PORT ...) "
        f"or Dataflow (./run_pipeline.sh dataflow ...), or {split}"
    )


def check_local_run(
    files: Iterable[tuple[str, int]],
    *,
    token_vectors: bool,
    layers: str,
    output_dim: int,
    n_layers: int,
    dtype: str,
    workers: int = 1,
    token_cache_bytes: int = 0,
    limit_gb: float | None = None,
    limit_fraction: float = 0.8,
    limit_flag: str = "--local_memory_limit_gb",
) -> int:
    """The one call for the launcher: estimates a local run over ``files`` and refuses it (``LocalMemoryError``)
    when it would not fit. ``limit_gb``: an explicit bound in GB (decimal) used whole instead of the machine's
    available memory (``limit_flag`` names it in the message); 0 disables the check. Returns the estimate in bytes
    (for the log)."""
    files = list(files)
    shape = {"token_vectors": token_vectors, "layers": layers, "output_dim": output_dim, "n_layers": n_layers}
    shape.update(dtype=dtype, workers=workers, token_cache_bytes=token_cache_bytes)
    estimate = estimate_local_peak_bytes(files, **shape)
    if limit_gb == 0:
        return estimate
    settings = describe_settings(token_vectors=token_vectors, layers=layers, n_layers=n_layers, workers=workers)
    base = estimate_local_peak_bytes([], **shape)  # start-up alone: what no split of the input can save
    details = {"input_size": input_bytes(files), "settings": settings, "base": base}
    if limit_gb is not None:
        check_local_memory(estimate, int(limit_gb * 1e9), limit_fraction=1.0, bound_flag=limit_flag, **details)
    else:
        check_local_memory(estimate, available_memory_bytes(), limit_fraction=limit_fraction, **details)
    return estimate


def local_workers(options: dict) -> int:
    """Worker processes of a local run from Beam's options (``PipelineOptions.get_all_options()``):
    ``direct_num_workers`` with ``multi_processing``; 1 for in-process and multi-threaded runs."""
    if options.get("direct_running_mode") == "multi_processing":
        workers = int(options.get("direct_num_workers") or 0)
        return workers if workers > 0 else os.cpu_count() or 1  # Beam: 0 = one per core
    return 1
