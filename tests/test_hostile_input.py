"""Hostile input and misuse of the pipeline launcher (issue 10), one test group per class: a run writes and
deletes only inside its own folder; one run owns a run folder at a time (local disk, S3, GCS preconditions);
flags are exact; a broken configuration fails the run before it starts and a run whose documents nearly all fail
does not commit; errors read like errors. The text-reading classes are in ``test_hostile_text.py``, the model and
API classes in ``test_hostile_model.py``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from elmo.errors import UsageError
from pipeline.memory import LocalMemoryError
from pipeline.run import run
from tests.beam_testing import REPO, SAMPLE_GLOB, TINY_MODEL, restore_torch_threads, run_job  # noqa: F401
from tests.storage_servers import fake_gcs_server, restore_environment, set_environment
from transforms.manifest import write_manifest
from transforms.run_folder import (
    OWNER_FILE,
    Owner,
    RunFolderBusyError,
    RunFolderError,
    claim,
    clear_run_folder,
    delete_our_files,
    read_owner,
    release,
)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` -> sha256 of its bytes (what a test compares before and after)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def launch(*flags: str) -> None:
    """``pipeline.run.run`` with the tiny model unless a flag names another (raises what the launcher raises)."""
    model = [] if any(f.startswith("--model") for f in flags) else [f"--model={TINY_MODEL}"]
    run([*model, *flags])


@pytest.fixture
def user_files(tmp_path: Path) -> Path:
    """A user's folder: input text, an earlier committed run of another id, and unrelated files."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("The bank raised rates. We sat on the bank.\n")
    (tmp_path / "notes.md").write_text("my notes\n")
    sibling = tmp_path / "out" / "other-run"
    sibling.mkdir(parents=True)
    (sibling / "_SUCCESS").write_text("")
    (sibling / "manifest.json").write_text("{}")
    return tmp_path


# -- 1. a run writes and deletes only inside its own run folder ------------------------------------------------------


@pytest.mark.parametrize("run_id", ["..", ".", "../data", "a/b", "", "-x", ".hidden", "x" * 129, "a\\b", "é"])
def test_a_run_id_that_is_not_a_plain_name_is_refused_and_nothing_is_deleted(user_files, run_id):
    before = tree_digest(user_files)
    with pytest.raises(RunFolderError, match="is not a plain name"):
        launch(f"--input={user_files}/data/*", f"--output={user_files}/out", f"--run_id={run_id}")
    assert tree_digest(user_files) == before


def test_a_recursive_input_glob_over_the_output_is_refused(user_files):
    before = tree_digest(user_files)
    with pytest.raises(UsageError, match=r"lies where --input .* reads"):
        launch(f"--input={user_files}/**", f"--output={user_files}/out")
    with pytest.raises(UsageError, match=r"lies where --input .* reads"):  # an earlier run's files matched directly
        launch(f"--input={user_files}/out/*/*", f"--output={user_files}/out")
    assert tree_digest(user_files) == before


def test_a_folder_with_files_that_are_not_ours_is_not_cleared(user_files):
    folder = user_files / "out" / "mine"
    (folder / "sentences").mkdir(parents=True)
    (folder / "sentences" / "part-00000-of-00001.parquet").write_bytes(b"an older attempt")
    (folder / "keep-me.txt").write_text("a user's file")
    before = tree_digest(user_files)
    with pytest.raises(RunFolderError, match=r"does not write .*keep-me.txt"):
        launch(f"--input={user_files}/data/*", f"--output={user_files}/out", "--run_id=mine")
    assert tree_digest(user_files) == before
    assert not (folder / OWNER_FILE).exists()  # the refused run released its claim


def test_a_symlink_out_of_the_run_folder_is_never_followed_for_deletion(user_files):
    folder = user_files / "out" / "linked"
    (folder / "sentences").mkdir(parents=True)
    (folder / "sentences" / "part-00000-of-00001.parquet").symlink_to(user_files / "data" / "a.txt")
    with pytest.raises(RunFolderError, match="does not write"):
        clear_run_folder(str(folder))
    with pytest.raises(RunFolderError, match="refusing to delete"):
        delete_our_files(str(folder), [str(user_files / "data" / "a.txt")], "a test")
    assert (user_files / "data" / "a.txt").read_text().startswith("The bank")


def test_a_rerun_replaces_only_its_own_folder(user_files):
    flags = (f"--input={user_files}/data/*", f"--output={user_files}/out", "--run_id=nightly")
    launch(*flags)
    folder = user_files / "out" / "nightly"
    (folder / "errors" / "part-00001-of-00002.jsonl").write_text("a stale shard of an older attempt\n")
    outside = {k: v for k, v in tree_digest(user_files).items() if not k.startswith("out/nightly/")}
    launch(*flags)
    assert not (folder / "errors" / "part-00001-of-00002.jsonl").exists()
    assert {k: v for k, v in tree_digest(user_files).items() if not k.startswith("out/nightly/")} == outside
    assert sorted(p.name for p in folder.iterdir()) == ["_SUCCESS", "errors", "manifest.json", "sentences", "vertex"]


# -- 2. one owner per run folder -----------------------------------------------------------------------------------


def test_a_run_started_while_another_owns_the_folder_fails_and_leaves_the_committed_run_intact(user_files):
    flags = (f"--input={user_files}/data/*", f"--output={user_files}/out", "--run_id=shared")
    launch(*flags)
    folder = user_files / "out" / "shared"
    committed = tree_digest(folder)
    holder = claim(str(folder))  # another run (alive: this process) is working on the folder
    try:
        with pytest.raises(RunFolderBusyError, match=r"in use by a run started .* by pid \d+"):
            launch(*flags)
        assert {k: v for k, v in tree_digest(folder).items() if k != OWNER_FILE} == committed
    finally:
        assert release(str(folder), holder.token)
    with pytest.raises(RunFolderBusyError, match="no longer owned"):  # a commit by a run that lost the folder
        write_manifest(str(folder), {}, {}, [], owner_token="someone-else")


def test_of_many_simultaneous_claims_exactly_one_wins(tmp_path):
    folder = str(tmp_path / "run")
    winners, refusals, barrier = [], [], threading.Barrier(16)

    def contender() -> None:
        barrier.wait()
        try:
            winners.append(claim(folder))
        except RunFolderBusyError:
            refusals.append(1)

    threads = [threading.Thread(target=contender) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(winners), len(refusals)) == (1, 15)
    assert read_owner(folder).token == winners[0].token


def test_a_claim_left_by_a_dead_process_of_this_machine_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = dataclasses.replace(Owner.new(), pid=int(dead.stdout))
    (folder / OWNER_FILE).write_text(stale.to_json())
    owner = claim(str(folder))
    assert owner.token != stale.token and read_owner(str(folder)).token == owner.token
    foreign = dataclasses.replace(owner, host="another-machine", token="t2")  # not provably dead: kept
    (folder / OWNER_FILE).write_text(foreign.to_json())
    with pytest.raises(RunFolderBusyError, match="on another-machine"):
        claim(str(folder))


@pytest.fixture(scope="module")
def object_stores(tmp_path_factory):
    """A real S3 server (moto) and a GCS server with preconditions (fake-gcs-server), each with a bucket."""
    from tests.storage_servers import s3_server

    root = tmp_path_factory.mktemp("stores")
    servers = [fake_gcs_server(root / "gcs").start(), s3_server(root / "s3").start()]
    env = {
        "STORAGE_EMULATOR_HOST": servers[0].url,
        "NO_GCE_CHECK": "true",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "AWS_ENDPOINT_URL_S3": servers[1].url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    previous = set_environment(env)
    try:
        import boto3
        import gcsfs
        import s3fs
        from google.cloud import storage

        gcsfs.GCSFileSystem.clear_instance_cache()
        s3fs.S3FileSystem.clear_instance_cache()
        storage.Client.create_anonymous_client().create_bucket("owner-test-gs")
        boto3.client("s3").create_bucket(Bucket="owner-test-s3")
        yield {"gs": "gs://owner-test-gs", "s3": "s3://owner-test-s3"}
    finally:
        for server in servers:
            server.stop()
        restore_environment(previous)
        gcsfs.GCSFileSystem.clear_instance_cache()
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.mark.integration
@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_object_store_claims_are_exclusive(object_stores, scheme):
    folder = f"{object_stores[scheme]}/out/run-1"
    first = claim(folder)
    with pytest.raises(RunFolderBusyError, match="in use by"):
        claim(folder)
    assert read_owner(folder).token == first.token
    assert release(folder, first.token)
    assert read_owner(folder) is None
    second = claim(folder)  # free again after the release
    assert release(folder, second.token)


# -- 4. flags are exact ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tokens_vectors"], "unknown flag --tokens_vectors \\(did you mean --token_vectors\\?\\)"),
        (["--dtpye", "float16"], "unknown flag --dtpye \\(did you mean --dtype\\?\\)"),
        (["--dt", "float16"], "unknown flag --dt \\(did you mean --dtype"),
        (["--dt=float16"], "unknown flag --dt \\(did you mean --dtype"),
        (["--no_such_flag=3"], "unknown flag --no_such_flag; see --help"),
        (["stray"], "unexpected argument 'stray'"),
        (["--dtype", "float64"], "invalid choice: 'float64'"),
        (["--device", "tpu"], "'tpu' is not a device"),
        (["--max_failed_fraction=nan"], "'nan' is not between 0 and 1"),
        (["--token_vectors=yes"], "ignored explicit argument 'yes'"),
        (["--execution_mode_for_batch=BATCHED"], "invalid choice: 'BATCHED'"),
    ],
)
def test_a_flag_that_is_not_exactly_known_stops_the_launcher(tmp_path, flags, message):
    with pytest.raises(UsageError, match=message):
        launch(f"--input={SAMPLE_GLOB}", f"--output={tmp_path}/out", *flags)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module", ["elmo.embed", "elmo.training.train"])
def test_the_model_commands_take_no_abbreviated_flags(module):
    import importlib

    parser = importlib.import_module(module).build_parser()
    flags = [s for action in parser._actions for s in action.option_strings if s.startswith("--") and len(s) > 6]
    prefixes = [flag[:-2] for flag in flags]  # e.g. --batch-si for --batch-size: argparse would take it by default
    required = [f"{a.option_strings[-1]}=x" for a in parser._actions if a.required]
    _, unknown = parser.parse_known_args([*required, *(f"{prefix}=1" for prefix in prefixes)])
    assert [u.split("=")[0] for u in unknown] == prefixes


# -- 5. a broken configuration fails the run; too many failed documents do not commit ------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max_document_bytes=0"], "--max_document_bytes=0: must be at least 1"),
        (["--num_shards=-1"], "--num_shards=-1: must be 0"),
        (["--model_copies=0"], "--model_copies=0: must be at least 1"),
        (["--torch_threads=-1"], "--torch_threads=-1"),
        (["--token_cache_size=-1"], "--token_cache_size=-1: must be 0"),
        (["--execution_mode_for_batch=BATCH_FORCED"], "a flag of the Flink runner; this run uses the local runner"),
        (["--layers=nan,0,0"], "nan"),
        (["--layers=1e309,0,0"], "1e309|inf"),
        (["--layers=1,1,1;gamma=nan"], "gamma"),
    ],
)
def test_impossible_settings_fail_before_anything_runs(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        launch(f"--input={SAMPLE_GLOB}", f"--output={tmp_path}/out", *flags)
    assert not (tmp_path / "out").exists()


def test_bf16_on_a_cpu_where_it_is_slower_is_refused_before_anything_runs(tmp_path):
    import torch

    from elmo.bf16 import bf16_refusal, cpu_flags

    refusal = bf16_refusal(torch.device("cpu"))
    if refusal is None:  # an AMX CPU: the flag is accepted there (tests/test_fast_inference.py covers both answers)
        assert "amx_bf16" in cpu_flags()
        return
    with pytest.raises(UsageError, match=r"--bf16: this CPU has .*no AMX"):
        launch(f"--input={SAMPLE_GLOB}", f"--output={tmp_path}/out", "--bf16", "--device=cpu")
    assert not (tmp_path / "out").exists()


def test_an_input_naming_a_directory_is_refused(user_files):
    with pytest.raises(UsageError, match=r"names the directory .*data; give a glob of its files"):
        launch(f"--input={user_files}/data", f"--output={user_files}/out")


def test_a_model_directory_that_is_missing_or_incomplete_is_named(tmp_path):
    with pytest.raises(UsageError, match=r"model directory .*nowhere does not exist"):
        launch(f"--input={SAMPLE_GLOB}", f"--output={tmp_path}/out", f"--model={tmp_path}/nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "options.json").write_text((TINY_MODEL / "options.json").read_text())
    with pytest.raises(UsageError, match=r"half has no weights.hdf5"):
        launch(f"--input={SAMPLE_GLOB}", f"--output={tmp_path}/out", f"--model={tmp_path}/half")


def test_a_run_whose_documents_nearly_all_fail_does_not_commit(tmp_path):
    (tmp_path / "in").mkdir()
    lines = [b"One good sentence here."] + [b"bad \xff utf8"] * 3 + [b"nul\x00byte"]
    (tmp_path / "in" / "junk.txt").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(Exception, match=r"4 of 5 documents failed \(80.0% > --max_failed_fraction=0.5\)"):
        launch(f"--input={tmp_path}/in/*", f"--output={tmp_path}/out", "--run_id=junk")
    folder = tmp_path / "out" / "junk"
    assert not (folder / "_SUCCESS").exists() and not (folder / OWNER_FILE).exists()
    assert len((folder / "errors" / "part-00000-of-00001.jsonl").read_text().splitlines()) == 4
    run_dir = run_job(tmp_path / "out", "--run_id=junk", "--max_failed_fraction=1", input_glob=f"{tmp_path}/in/*")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert (run_dir / "_SUCCESS").exists() and manifest["counts"]["documents_failed"] == 4


# -- 10. memory on the local runner ---------------------------------------------------------------------------------


def test_a_local_run_that_would_not_fit_in_memory_is_refused_up_front(tmp_path):
    with pytest.raises(LocalMemoryError, match=r"about .* for .*Flink .*Dataflow"):
        launch(f"--input={SAMPLE_GLOB}", f"--output={tmp_path}/out", "--local_memory_limit_gb=0.5")
    assert not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match=r"--local_memory_limit_gb=-1\.0"):
        launch(f"--input={SAMPLE_GLOB}", f"--output={tmp_path}/out", "--local_memory_limit_gb=-1")


# -- 9. errors read like errors -------------------------------------------------------------------------------------


def pipeline_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore::FutureWarning"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.run", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.integration
def test_configuration_errors_are_one_line_with_status_2_and_a_traceback_only_with_debug(tmp_path):
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    cases = [
        (["--dtpye", "float16"], "error: unknown flag --dtpye (did you mean --dtype?)"),
        ([f"--output={not_a_dir}/out"], f"error: --output {not_a_dir}/out: cannot write there"),
        (["--device=cuda"], "error: --device cuda: device 'cuda' was asked for but CUDA is not available"),
    ]
    for flags, expected in cases:
        done = pipeline_cli(f"--input={SAMPLE_GLOB}", f"--model={TINY_MODEL}", f"--output={tmp_path}/o", *flags)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2, done.stderr
        assert lines[-1].startswith(f"python -m pipeline.run: {expected}"), done.stderr
        assert "Traceback" not in done.stderr
    debug = pipeline_cli(f"--input={SAMPLE_GLOB}", "--dtpye", "float16", "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr
