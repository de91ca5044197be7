"""Entry point: ``python -m pipeline.run --input GLOB --output PREFIX [--model DIR] [Beam flags]``.

Check the flags, plan, claim the run folder, build, run, report. Without ``--runner`` the local ``FnApiRunner`` is
chosen explicitly: Beam's default ``DirectRunner`` would first try to download the Prism runner binary (with no
timeout). Configuration errors end the command with one line and exit status 2, a failed job with a short line and
status 1 (``--debug`` shows the tracebacks).
"""

from __future__ import annotations

import logging
import sys
import time
import traceback

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DebugOptions, GoogleCloudOptions, PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineState

from elmo.cli import DEBUG_FLAG, error_line, exit_code_for
from elmo.errors import UsageError
from elmo.malloc import freeze_imported_objects
from pipeline.dataflow import complete_argv
from pipeline.flags import check_flags
from pipeline.options import EmbedOptions, job_parser
from pipeline.plan import RunPlan, plan_run
from pipeline.summary import format_summary, summarize
from transforms.assemble import AssembleSentences
from transforms.dedup import DropDuplicateIds
from transforms.embed import EmbedWindows
from transforms.incremental import MatchPrevious, ReadPreviousRun, sentence_units
from transforms.manifest import CountOutcomes, WriteManifest
from transforms.model_handler import ElmoModelHandler
from transforms.read import ReadDocuments
from transforms.run_folder import Owner, RunFolderError, claim, clear_run_folder, release
from transforms.tokenize import TokenizeDocuments, WindowsOf
from transforms.write import WriteDeletedIds, WriteErrors, WriteParquet, WriteVertexJsonl, embedding_schema

PROG = "python -m pipeline.run"
LOCAL_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"  # by full name: any Beam resolves it
RUNNER_DATA_MESSAGE_BYTES = 256 * 1024  # see bound_runner_data_messages
_LOG = logging.getLogger(__name__)


def build_pipeline(p: beam.Pipeline, opts: EmbedOptions, plan: RunPlan, owner: Owner) -> None:
    """Adds the whole job to ``p``: read -> dedup -> tokenize -> [match a previous run] -> embed -> assemble ->
    write -> manifest."""
    documents, read_errors = p | "ReadDocuments" >> ReadDocuments(
        [path for path, _ in plan.files],
        plan.root,
        opts.input_format,
        opts.id_field,
        opts.text_field,
        opts.max_document_bytes,
    )
    unique, duplicates = documents | "DropDuplicateIds" >> DropDuplicateIds()
    tokenized, tokenize_errors = unique | "TokenizeDocuments" >> TokenizeDocuments(
        plan.tokenizer_json, plan.max_window_tokens, plan.window_overlap
    )
    handler = ElmoModelHandler(
        opts.model,
        layers=plan.layers,
        device=opts.device,
        max_batch_tokens=opts.max_batch_tokens,
        max_batch_windows=opts.max_batch_windows,
        expected_fingerprint=plan.fingerprint,
        torch_threads=opts.torch_threads,
        batch_invariant=opts.batch_invariant,
        token_cache_size=opts.token_cache_size,
        bf16=opts.bf16,
        large_model=opts.large_model,
        model_copies=opts.model_copies,
    )
    assemble_inputs: dict[str, beam.PCollection] = {}
    changes: dict[str, beam.PCollection] = {}
    if plan.previous is None:
        windows = tokenized | "WindowsOf" >> WindowsOf()
    else:  # a nightly run: carry what the previous run holds, embed the rest, list what vanished
        previous = plan.previous
        rows = p | "ReadPreviousRun" >> ReadPreviousRun(previous.sentence_files, previous.carry, opts.token_vectors)
        units = tokenized | "SentenceUnits" >> beam.FlatMap(sentence_units, plan.settings_digest)
        carried, windows, deleted, statuses = {"units": units, "previous": rows} | "MatchPrevious" >> MatchPrevious(
            previous.carry
        )
        assemble_inputs["carried"] = carried
        changes = {"deleted": deleted, "statuses": statuses}
    vectors, failed_windows = windows | "EmbedWindows" >> EmbedWindows(handler)
    sentences, stats, embed_errors = {
        "doc": tokenized,
        "vectors": vectors,
        "failed": failed_windows,
        **assemble_inputs,
    } | "AssembleSentences" >> AssembleSentences(
        plan.layers, opts.dtype, plan.fingerprint, opts.token_vectors, plan.settings_digest
    )

    errors = (read_errors, duplicates, tokenize_errors, embed_errors) | "AllErrors" >> beam.Flatten()
    schema = embedding_schema(plan.output_dim, plan.n_layers, opts.dtype, plan.layers, opts.token_vectors)
    run_dir, shards = plan.run_dir, plan.num_shards
    written = {
        "parquet": sentences | "WriteParquet" >> WriteParquet(f"{run_dir}/sentences/part", schema, shards),
        "vertex": sentences | "WriteVertexJsonl" >> WriteVertexJsonl(f"{run_dir}/vertex/part", shards),
        "errors": errors | "WriteErrors" >> WriteErrors(f"{run_dir}/errors/part", shards),
    }
    count_inputs = {"documents": documents, "read_errors": read_errors, "stats": stats, "failed": errors}
    if changes:  # the delta for a vector index: upserts of new and changed sentences, and the deleted ids
        upserts = sentences | "Changed" >> beam.Filter(lambda record: record["changed"])
        written["delta"] = upserts | "WriteVertexDelta" >> WriteVertexJsonl(f"{run_dir}/vertex-delta/part", shards)
        written["deleted"] = changes["deleted"] | "WriteDeletedIds" >> WriteDeletedIds(
            f"{run_dir}/vertex-delta/delete/part", shards
        )
        count_inputs["changes"] = (
            changes["deleted"] | "DeletedCount" >> beam.Map(lambda _: ("sentences_deleted", 1)),
            changes["statuses"],
        ) | "Changes" >> beam.Flatten()
    counts = count_inputs | "CountOutcomes" >> CountOutcomes()
    runner = p.options.view_as(StandardOptions).runner
    output = run_dir.rsplit("/", 1)[0]  # --output, absolute when local (the commit step may run elsewhere)
    latest = (output, plan.run_date, plan.fingerprint) if plan.run_date else None
    manifest = WriteManifest(
        run_dir, plan.manifest_base(opts, runner), owner.token, opts.max_failed_fraction, record_latest=latest
    )
    _ = {"counts": counts, **written} | "WriteManifest" >> manifest


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None):
    """Runs the job to completion; returns the ``PipelineResult`` with a ``summary`` dict attached (run_dir,
    counts, tokens_per_s, padding_ratio), which is also printed. With ``--help``: prints the flags, returns None.

    Raises ``UsageError`` (or another ``ValueError``) for a configuration refused before anything runs, and
    ``RunFolderError`` when the run folder is another run's or holds files that are not ours.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        job_parser().print_help()
        return None
    check_flags(argv)  # every argument a known flag, spelled in full
    argv = complete_argv(argv)  # Dataflow: checked flags and GPU settings; --gpu_type refused elsewhere
    options = PipelineOptions(argv)  # exact names since Beam 2.66: --output no longer sets --output_executable_path
    if test_pipeline is None and options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = LOCAL_RUNNER
    bound_runner_data_messages(options)
    opts = options.view_as(EmbedOptions)
    FileSystems.set_options(options)  # the launcher's own gs:// / s3:// calls (S3 needs options before a Pipeline)
    runner = (test_pipeline.options if test_pipeline is not None else options).view_as(StandardOptions).runner
    plan = plan_run(opts, runner)
    owner = _claim(plan.run_dir, opts.output)
    try:
        clear_run_folder(plan.run_dir)  # an earlier attempt's files, _SUCCESS first; only names a run writes
        p = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
        build_pipeline(p, opts, plan, owner)
        _LOG.info("Embedding %d input files into %s", len(plan.files), plan.run_dir)
        started = time.monotonic()
        result = p.run()
        if options.view_as(GoogleCloudOptions).template_location:
            owner = None  # a Flex Template launch: the job runs on after this process, its commit step releases
            return result
        state = result.wait_until_finish()
        if state != PipelineState.DONE:  # Beam raises for FAILED only; CANCELLED or UNKNOWN must not look like success
            raise RuntimeError(f"the job ended in state {state}, not DONE; {plan.run_dir} has no _SUCCESS")
    finally:
        if owner is not None:
            release(plan.run_dir, owner.token)  # no-op after a commit (which releases it itself)
    summary = summarize(plan.run_dir, result, time.monotonic() - started)
    print(format_summary(summary), flush=True)
    result.summary = summary  # for callers and tests
    return result


def bound_runner_data_messages(options: PipelineOptions) -> None:
    """On a job-service runner (Flink, portable): ``--experiments=data_buffer_size_limit=RUNNER_DATA_MESSAGE_BYTES``
    unless given.

    The Java runner sends a stage's input to its SDK worker in gRPC messages of ``data_buffer_size_limit`` bytes
    (default 1 MB) and checks the stream's flow control only every 64 messages, so up to 64 MB per running stage
    sit in the TaskManager's direct (off-heap) memory; with 2 slots and Flink's default 128 MB of framework
    off-heap memory that ran out at 400k tokens (issue 12: ``OutOfMemoryError: Direct buffer memory``). Smaller
    messages bound it to 64 x 256 KB = 16 MB per stage, whatever the data.
    """
    runner = (options.view_as(StandardOptions).runner or "").rsplit(".", 1)[-1]
    if runner not in ("FlinkRunner", "PortableRunner"):
        return
    debug = options.view_as(DebugOptions)
    if not any(e.startswith("data_buffer_size_limit=") for e in debug.experiments or []):
        debug.add_experiment(f"data_buffer_size_limit={RUNNER_DATA_MESSAGE_BYTES}")


def _claim(run_dir: str, output: str) -> Owner:
    """Claims the run folder; an ``--output`` that cannot be written is a usage error naming it."""
    try:
        return claim(run_dir)
    except RunFolderError:
        raise
    except OSError as err:
        raise UsageError(f"--output {output}: cannot write there ({type(err).__name__}: {err})") from err


def main(argv: list[str] | None = None) -> int:
    """Console entry: INFO logs for this project, warnings only from Beam. Exit status 0 when the run committed;
    2 for a configuration refused before the job, 1 when a file or store failed or the job failed, 130 when
    interrupted: one line on stderr each, the traceback only with ``--debug`` (a bug keeps its traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    freeze_imported_objects()  # the imports are done: the collector skips them from here on (elmo.malloc)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for name in ("pipeline", "transforms"):
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        run(argv)
    except (Exception, KeyboardInterrupt) as err:
        status = 1
        if isinstance(err, KeyboardInterrupt) or _before_job(err):
            status = exit_code_for(err, expected=(ValueError,))  # planning raises ValueErrors for bad settings
            if status is None:
                raise  # a bug: keep the traceback
        if DEBUG_FLAG in argv:
            traceback.print_exc()
        if status != 1 or _before_job(err):
            print(error_line(err, PROG), file=sys.stderr, flush=True)
        else:
            print(f"{PROG}: error: the job failed: {_last_line(err)}\n(--debug shows the traceback)", file=sys.stderr)
        return status
    return 0


def _before_job(err: BaseException) -> bool:
    """Whether an exception was raised by the launcher before the pipeline ran (not from inside Beam)."""
    frames = traceback.extract_tb(err.__traceback__)
    return not any("apache_beam" in frame.filename for frame in frames)


def _last_line(err: BaseException) -> str:
    """The innermost error's message: Beam wraps a worker's exception in its own with the whole traceback."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[-1] if lines else type(err).__name__)[:1000]


if __name__ == "__main__":
    sys.exit(main())
