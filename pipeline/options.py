"""The job's options: one ``PipelineOptions`` subclass (every Beam flag is accepted alongside)."""

from __future__ import annotations

import argparse
import datetime
import re

from apache_beam.options.pipeline_options import PipelineOptions

from elmo.config import DEFAULT_TOKEN_CACHE_SIZE
from elmo.model_dir import default_model_dir

BUILTIN_MODEL = str(default_model_dir())  # installed with the package (elmo/models/elmo-en-small)
GPU_TYPE_RE = re.compile(r"nvidia-[a-z0-9]+(-[a-z0-9]+)*")  # Dataflow's accelerator names: nvidia-l4, nvidia-tesla-t4
GPU_SHARING = ("shared_model", "mps", "single_process")  # how the SDK processes of a GPU worker use it
DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
LATEST = "latest"  # --previous_run latest: the run <output>/LATEST points to
DEFAULT_MAX_FAILED_FRACTION = 0.5


def gpu_type(value: str) -> str:
    """argparse type of ``--gpu_type``: a Dataflow accelerator name such as nvidia-l4 or nvidia-tesla-t4."""
    if not GPU_TYPE_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a GPU type like nvidia-l4 or nvidia-tesla-t4")
    return value


def run_date(value: str) -> str:
    """argparse type of ``--run_date``: a calendar date YYYY-MM-DD."""
    try:
        if DATE_RE.fullmatch(value):
            return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{value!r} is not a date YYYY-MM-DD")


def device_name(value: str) -> str:
    """argparse type of ``--device``: auto, cpu, cuda or cuda:N."""
    if not DEVICE_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a device: use auto, cpu, cuda or cuda:N")
    return value


def fraction(value: str) -> float:
    """argparse type of a fraction in [0, 1]."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= number <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{value!r} is not between 0 and 1")
    return number


class EmbedOptions(PipelineOptions):
    """Flags of the ELMo embedding job."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--input", help="Glob of input shards (.txt, .jsonl, optionally .gz); local, gs:// or s3://."
        )
        parser.add_argument("--output", default="output", help="Output prefix; a run writes under <output>/<run_id>/.")
        parser.add_argument(
            "--model",
            default=BUILTIN_MODEL,
            help="Model directory with options.json, weights.hdf5 and tokenizer.json (default: the built-in model).",
        )
        parser.add_argument(
            "--run_id",
            default=None,
            help="Name of the run directory; default run-<hash of input, model fingerprint and settings>, so a "
            "re-run with the same settings replaces the previous one.",
        )
        parser.add_argument(
            "--run_date",
            type=run_date,
            default=None,
            help="Nightly runs: the date this run stands for (YYYY-MM-DD); the run folder is <output>/<run_date>/ "
            "unless --run_id is given, and <output>/LATEST moves to it after _SUCCESS when no later date holds it.",
        )
        parser.add_argument(
            "--previous_run",
            default=None,
            help="A committed run folder (local, gs://, s3://) or 'latest' (the newest run before --run_date that "
            "<output>/LATEST records): sentences whose content key it holds are carried over instead of embedded, "
            "and the deleted sentence ids are listed (docs/pipeline.md, 'Nightly runs').",
        )
        parser.add_argument(
            "--full",
            action="store_true",
            help="With --previous_run: embed every sentence anyway (still listing changes and deletions).",
        )
        parser.add_argument(
            "--input_format",
            default="auto",
            choices=["auto", "text", "jsonl"],
            help="auto: .jsonl/.json/.ndjson shards are JSON lines, anything else plain text (one document per line).",
        )
        parser.add_argument("--id_field", default="id", help="JSON lines: field holding the document id.")
        parser.add_argument("--text_field", default="text", help="JSON lines: field holding the document text.")
        parser.add_argument(
            "--max_document_bytes",
            type=int,
            default=1_000_000,
            help="Lines longer than this (UTF-8 bytes) are dead-lettered as 'document too large' without being held.",
        )
        parser.add_argument(
            "--layers",
            default="average",
            help="all | top | average | comma-separated pre-softmax mix weights (e.g. 0,0,1 or 1,1,1;gamma=0.5).",
        )
        parser.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="Stored vector type.")
        parser.add_argument(
            "--token_vectors", action="store_true", help="Also store every token's vector (the layer mix)."
        )
        parser.add_argument(
            "--max_window_tokens",
            type=int,
            default=None,
            help="Sentences longer than this are embedded as overlapping windows (default: tokenizer.json's "
            "max_sentence_tokens).",
        )
        parser.add_argument(
            "--window_overlap",
            type=int,
            default=None,
            help="Tokens shared by consecutive windows (default: tokenizer.json's window_overlap).",
        )
        parser.add_argument(
            "--max_batch_tokens", type=int, default=2048, help="Token budget of one inference batch (padded length)."
        )
        parser.add_argument("--max_batch_windows", type=int, default=512, help="Most windows in one inference batch.")
        parser.add_argument(
            "--device", type=device_name, default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N."
        )
        parser.add_argument(
            "--large_model",
            action="store_true",
            help="Load one model per worker machine, shared by its SDK processes (e.g. one GPU).",
        )
        parser.add_argument(
            "--model_copies", type=int, default=None, help="Exact number of model copies per worker machine."
        )
        parser.add_argument(
            "--torch_threads",
            type=int,
            default=1,
            help="torch intra-op threads per worker process (0: torch's default). Beam's parallelism is one process "
            "per core, so 1 avoids oversubscription, which made the CPU model 10-100x slower on a busy machine.",
        )
        parser.add_argument(
            "--batch_invariant",
            action="store_true",
            help="Bit-exact mode: every GEMM on fixed-size row chunks, so a window's vectors are the same bytes "
            "whatever the batching, bundling or number of workers (padded batches otherwise differ by float "
            "rounding, ~1e-7); about 1.3-1.4x the CPU time (README benchmarks).",
        )
        parser.add_argument(
            "--token_cache_size",
            type=int,
            default=DEFAULT_TOKEN_CACHE_SIZE,
            help="Distinct tokens whose char-CNN vectors each worker process keeps across batches (LRU; exact; "
            "4*P bytes each: 32 MiB at the default for the built-in model). 0: no cache.",
        )
        parser.add_argument(
            "--bf16",
            action="store_true",
            help="bfloat16 GEMMs (cell state and outputs float32): for GPUs and CPUs with AMX; refused where it "
            "would be slower than float32. Changes vectors by about 1e-2 (README benchmarks).",
        )
        parser.add_argument(
            "--num_shards",
            type=int,
            default=None,
            help="Files per output kind. A fixed count N gives fixed names part-SSSSS-of-N (Beam groups each "
            "file's records on one worker to write it); 0 writes one file per bundle, the count chosen by the "
            "runner, and no step holds more than one bundle's records. Default: 1 on the local runner, 0 on "
            "Flink, Dataflow and other distributed runners.",
        )
        parser.add_argument(
            "--max_failed_fraction",
            type=fraction,
            default=DEFAULT_MAX_FAILED_FRACTION,
            help="The run fails without committing (no _SUCCESS) when more than this fraction of the documents read "
            "failed (errors/ still says why); 1 commits whatever fails.",
        )
        parser.add_argument(
            "--local_memory_limit_gb",
            type=float,
            default=None,
            help="Local runner: refuse the run up front when its estimated peak memory exceeds this many GB "
            "(default: 80%% of the memory this machine or its cgroup has available; 0: no check). "
            "See docs/pipeline.md, 'Memory on the local runner'.",
        )
        parser.add_argument(
            "--debug", action="store_true", help="Show Python tracebacks of configuration errors and job failures."
        )
        # Dataflow GPU workers (pipeline/dataflow.py turns these into Beam/Dataflow flags; docs/dataflow.md)
        parser.add_argument(
            "--gpu_type",
            type=gpu_type,
            default=None,
            help="Dataflow: attach this GPU to every worker (nvidia-l4, nvidia-tesla-t4, ...): adds the "
            "worker_accelerator service option with driver install, --device cuda and --gpu_sharing's settings.",
        )
        parser.add_argument("--gpu_count", type=int, default=1, help="Dataflow: GPUs per worker (only 1 for now).")
        parser.add_argument(
            "--gpu_sharing",
            default="shared_model",
            choices=GPU_SHARING,
            help="Dataflow GPU workers: shared_model (one model per VM served to every SDK process, --large_model), "
            "mps (a model per SDK process, NVIDIA MPS runs them concurrently), single_process (one SDK process "
            "per VM, --experiments=no_use_multiple_sdk_containers).",
        )


def job_parser() -> argparse.ArgumentParser:
    """An argparse parser of this job's own flags only (for ``--help`` and for listing them)."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m pipeline.run",
        description="Embeds sharded text with an ELMo model on Apache Beam (see docs/pipeline.md).",
        epilog="Every Apache Beam pipeline flag (--runner, --direct_num_workers, --direct_running_mode, ...) is "
        "accepted too. Without --runner the local FnApiRunner is used.",
    )
    EmbedOptions._add_argparse_args(parser)
    return parser


def option_names() -> set[str]:
    """The names (dests) of this job's own flags, without Beam's."""
    return {action.dest for action in job_parser()._actions} - {"help"}


class FlinkBatchOptions(PipelineOptions):
    """Flags of Beam's Java Flink runner that the Python SDK does not declare; declared here so that the exact-flag
    check accepts them, and passed to the job server by name like every pipeline option."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--execution_mode_for_batch",
            choices=["PIPELINED", "BATCH", "BATCH_FORCED", "PIPELINED_FORCED"],
            default=None,
            help="Flink: how batch stages exchange data. BATCH_FORCED makes every exchange blocking, so a stage's "
            "subtasks can run in waves on fewer slots than --parallelism (smaller partitions: docs/flink.md).",
        )
