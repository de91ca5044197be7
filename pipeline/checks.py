"""Checks the launcher makes before anything runs: sizes, input kinds, input/output overlap, model files, device.

Each raises ``UsageError`` naming the flag and the value, so a misconfigured run stops in one line before a worker
starts or a file is touched.
"""

from __future__ import annotations

import os
import re

from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

from elmo import storage
from elmo.api import check_model_directory, validate_device
from elmo.bf16 import bf16_refusal
from elmo.errors import ConfigError, ModelFilesError, UsageError
from elmo.model_dir import PIPELINE_MODEL_FILES
from pipeline.options import EmbedOptions
from transforms.latest import LATEST_FILE
from transforms.model_handler import resolve_device
from transforms.run_folder import OUTPUT_SUFFIXES

LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner", "TestRunner")
# What a run writes, relative to <output>: a stand-in run id and the first shard of each output kind.
_OUTPUT_SAMPLES = (
    LATEST_FILE,
    "some-run/_SUCCESS",
    "some-run/manifest.json",
    *(f"some-run/{kind}/part-00000-of-00001{suffix}" for kind, suffix in OUTPUT_SUFFIXES.items()),
)


def check_sizes(opts: EmbedOptions) -> None:
    """Every size and count flag is in its range (``--max_document_bytes 0`` would fail every document)."""
    at_least_one = {
        "max_document_bytes": opts.max_document_bytes,
        "max_batch_tokens": opts.max_batch_tokens,
        "max_batch_windows": opts.max_batch_windows,
        "gpu_count": opts.gpu_count,
        "max_window_tokens": opts.max_window_tokens,
        "model_copies": opts.model_copies,
    }
    for name, value in at_least_one.items():
        if value is not None and value < 1:
            raise UsageError(f"--{name}={value}: must be at least 1")
    if opts.num_shards is not None and opts.num_shards < 0:
        raise UsageError(f"--num_shards={opts.num_shards}: must be 0 (one file per bundle) or more")
    if opts.token_cache_size < 0:
        raise UsageError(f"--token_cache_size={opts.token_cache_size}: must be 0 (no cache) or more")
    if opts.torch_threads < 0:
        raise UsageError(f"--torch_threads={opts.torch_threads}: must be 0 (torch's default) or more")
    if opts.window_overlap is not None and opts.window_overlap < 0:
        raise UsageError(f"--window_overlap={opts.window_overlap}: must be 0 or more")
    if opts.local_memory_limit_gb is not None and not opts.local_memory_limit_gb >= 0:
        raise UsageError(f"--local_memory_limit_gb={opts.local_memory_limit_gb}: must be 0 (no check) or more")
    if not 0.0 <= opts.max_failed_fraction <= 1.0:
        raise UsageError(f"--max_failed_fraction={opts.max_failed_fraction}: must be between 0 and 1")


def check_input_files(pattern: str, files: list[tuple[str, int]]) -> None:
    """The glob names files, not directories."""
    for path, _ in files:
        if not storage.is_remote(path) and os.path.isdir(path):
            raise UsageError(
                f"--input {pattern!r} names the directory {path}; give a glob of its files, e.g. "
                f"'{path.rstrip('/')}/*' (or '/**' to include subdirectories)"
            )


def check_output_outside_input(pattern: str, files: list[tuple[str, int]], output: str) -> None:
    """Refuses an ``--output`` whose runs the ``--input`` glob would read back (e.g. ``--input 'data/**'
    --output data/out``): every re-run would embed the earlier outputs."""
    out = _absolute(output).rstrip("/")
    inside = [path for path, _ in files if _absolute(path).startswith(out + "/")]
    glob = re.compile(FileSystem.translate_pattern(_absolute(pattern)))
    reachable = [f"{out}/{sample}" for sample in _OUTPUT_SAMPLES if glob.match(f"{out}/{sample}")]
    if inside or reachable:
        example = inside[0] if inside else reachable[0]
        raise UsageError(
            f"--output {output!r} lies where --input {pattern!r} reads (it would match {example}): every re-run "
            "would read earlier outputs as input; put the output outside the input glob"
        )


def _absolute(path: str) -> str:
    return path if storage.is_remote(path) else os.path.abspath(path)


def check_model_dir(model: str) -> None:
    """The model directory exists and holds ``options.json``, ``weights.hdf5`` and ``tokenizer.json``."""
    try:
        if not storage.is_remote(model):
            check_model_directory(model)  # a missing directory is named as such
        base = model.rstrip("/") + "/"
        missing = [name for name in PIPELINE_MODEL_FILES if not FileSystems.exists(base + name)]
        if missing:
            raise ModelFilesError(f"{model} has no {' and no '.join(missing)}")
    except ModelFilesError as err:
        raise UsageError(f"--model: {err}") from None


def is_local_runner(runner: str | None) -> bool:
    """Whether the job runs in this process (or its children) on this machine."""
    return runner is None or str(runner).rsplit(".", 1)[-1] in LOCAL_RUNNERS


def check_local_device(device: str, bf16: bool = False) -> None:
    """On a local runner the workers are this machine: ``--device cuda[:N]`` must name a GPU it has, and
    ``--bf16`` must be faster than float32 on it (``elmo.bf16``)."""
    try:
        parsed = validate_device(resolve_device(device))
    except ConfigError as err:
        raise UsageError(f"--device {device}: {err}") from None
    refusal = bf16_refusal(parsed) if bf16 else None
    if refusal:
        raise UsageError(f"--bf16: {refusal}; leave it off (float32) on this machine")
