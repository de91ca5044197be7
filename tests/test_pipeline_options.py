"""The launcher: flags, help, run ids, and failing fast before any worker starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions

from elmo.model_dir import default_model_dir
from pipeline.options import BUILTIN_MODEL, EmbedOptions, option_names
from pipeline.plan import plan_run
from pipeline.run import run
from tests.beam_testing import SAMPLE_GLOB, TINY_MODEL


def _opts(*flags: str) -> EmbedOptions:
    return PipelineOptions([f"--model={TINY_MODEL}", *flags]).view_as(EmbedOptions)


def test_the_default_model_is_the_packaged_one():
    """--model's default is the model installed with the package (elmo.model_dir), wherever that is."""
    assert Path(BUILTIN_MODEL).resolve() == default_model_dir().resolve()
    assert PipelineOptions([]).view_as(EmbedOptions).model == BUILTIN_MODEL


def test_help_lists_the_job_flags(capsys):
    assert run(["--help"]) is None
    out = capsys.readouterr().out
    assert "--max_batch_tokens" in out and "--layers" in out and "FnApiRunner" in out
    assert {"input", "output", "model", "layers", "dtype", "batch_invariant"} <= option_names()


def test_plan_reads_the_model_and_names_the_run_by_its_settings(tmp_path):
    plan = plan_run(_opts(f"--input={SAMPLE_GLOB}", f"--output={tmp_path}"))
    assert (plan.fingerprint, plan.output_dim, plan.n_layers) == ("5597664da5f09b6c", 32, 3)
    assert (plan.max_window_tokens, plan.window_overlap, plan.layers) == (256, 32, "average")
    assert len(plan.files) == 4 and plan.root.endswith("sample_data/sotu/")
    same = plan_run(_opts(f"--input={SAMPLE_GLOB}", f"--output={tmp_path}"))
    other = plan_run(_opts(f"--input={SAMPLE_GLOB}", f"--output={tmp_path}", "--layers=top"))
    assert plan.run_id == same.run_id != other.run_id
    assert plan.run_dir == f"{tmp_path}/{plan.run_id}"


def test_files_per_output_default_to_one_locally_and_one_per_bundle_on_a_distributed_runner(tmp_path):
    flags = (f"--input={SAMPLE_GLOB}", f"--output={tmp_path}")
    assert plan_run(_opts(*flags)).num_shards == 1
    on_flink = plan_run(_opts(*flags), runner="FlinkRunner")
    assert on_flink.num_shards == 0 and on_flink.run_id != plan_run(_opts(*flags)).run_id
    assert plan_run(_opts(*flags, "--num_shards=3"), runner="FlinkRunner").num_shards == 3


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--input=/nonexistent/*.txt"], "matches no file"),
        ([], "--input GLOB is required"),
        ([f"--input={SAMPLE_GLOB}", "--layers=1,2"], "gives 2 weights; the model has 3"),
        ([f"--input={SAMPLE_GLOB}", "--layers=bogus"], "neither all/top/average"),
        (
            [f"--input={SAMPLE_GLOB}", "--max_window_tokens=8", "--window_overlap=8"],
            "--window_overlap \\(8\\) < --max_window_tokens",
        ),
        ([f"--input={SAMPLE_GLOB}", "--max_batch_tokens=0"], "at least 1"),
    ],
)
def test_bad_settings_fail_before_the_pipeline_starts(flags, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        run([f"--model={TINY_MODEL}", f"--output={tmp_path}/never-written", *flags])
    assert not (tmp_path / "never-written").exists()


def test_flink_java_runner_flags_are_accepted_and_reach_the_options():
    """``--execution_mode_for_batch`` belongs to Beam's Java Flink runner (the Python SDK does not declare it); the
    exact-flag check takes it and the job server receives it by name with the other options."""
    from pipeline.flags import check_flags

    check_flags(["--execution_mode_for_batch=BATCH_FORCED"])
    options = _opts(f"--input={SAMPLE_GLOB}", "--execution_mode_for_batch=BATCH_FORCED")
    assert options.get_all_options()["execution_mode_for_batch"] == "BATCH_FORCED"


def test_output_is_not_taken_for_a_longer_beam_flag():
    """Beam 2.62 read ``--output`` as an abbreviation of PortableOptions' ``--output_executable_path`` (a Flink or
    portable job server then wrote a jar instead of running the job; pipeline/run.py cleared it). Since Beam 2.66
    options are parsed with exact names, so nothing has to be cleared."""
    options = PipelineOptions(["--input=in/*", "--output=out", "--runner=FlinkRunner"])
    assert options.view_as(PortableOptions).output_executable_path is None
    assert options.view_as(EmbedOptions).output == "out"
    given = PipelineOptions(["--output=out", "--output_executable_path=/tmp/job.jar"])
    assert given.view_as(PortableOptions).output_executable_path == "/tmp/job.jar"
