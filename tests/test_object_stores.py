"""gs:// and s3:// end to end against real servers (tests/storage_servers.py): the pipeline, the model cache,
the commit protocol, transient and persistent storage failures, and the ``elmo`` API/CLI through fsspec."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.beam_testing import (
    REPO,
    SAMPLE_GLOB,
    TINY_MODEL,
    restore_torch_threads,  # noqa: F401  (autouse fixture)
    run_job_summary,
    sentence_vectors,
)
from tests.storage_servers import GCS_BUCKET, S3_BUCKET, download_tree, storage_servers, upload_tree  # noqa: F401

SAMPLE = Path(SAMPLE_GLOB).parent
INPUT_FILES = ["1790-washington.txt", "1861-lincoln.txt.gz"]  # plain text and gzip, 98 documents
MODEL_FILES = ["options.json", "weights.hdf5", "tokenizer.json"]
BUCKETS = {"gs": GCS_BUCKET, "s3": S3_BUCKET}


@pytest.fixture(scope="module")
def stores(storage_servers, tmp_path_factory):  # noqa: F811
    """Per scheme: the sample inputs and the tiny model uploaded to the store; plus the local reference run."""
    local_in = tmp_path_factory.mktemp("in")
    for name in INPUT_FILES:
        shutil.copy(SAMPLE / name, local_in / name)
    for scheme, bucket in BUCKETS.items():
        upload_tree(local_in, f"{scheme}://{bucket}/in")
        upload_tree(TINY_MODEL, f"{scheme}://{bucket}/models/tiny", MODEL_FILES)
    reference = run_job_summary(tmp_path_factory.mktemp("local-out"), "--run_id=local", input_glob=f"{local_in}/*")
    return {"servers": storage_servers, "reference": reference, "local_input": local_in}


def _run_remote(scheme: str, run_id: str, *flags: str) -> dict:
    bucket = BUCKETS[scheme]
    return run_job_summary(
        f"{scheme}://{bucket}/out",
        f"--model={scheme}://{bucket}/models/tiny",
        f"--run_id={run_id}",
        *flags,
        input_glob=f"{scheme}://{bucket}/in/*",
    )


def _same_as_reference(summary: dict, reference: dict, tmp_path: Path, atol: float = 0.0) -> list[str]:
    """Downloads the remote run, checks it against the local reference run (vectors bit-identical, or within
    ``atol``); returns the files it holds."""
    local = tmp_path / "downloaded"
    names = download_tree(summary["run_dir"], local)
    assert summary["counts"] == reference["counts"] and summary["reconciled"]
    manifest = json.loads((local / "manifest.json").read_text())
    assert manifest["reconciled"] and manifest["counts"] == reference["counts"]
    assert sorted(names) == sorted([*manifest["outputs"], "manifest.json", "_SUCCESS"])
    got, want = sentence_vectors(local), sentence_vectors(Path(reference["run_dir"]))
    assert got.keys() == want.keys()
    if atol:
        assert max(float(np.abs(got[k] - want[k]).max()) for k in want) <= atol
    else:
        assert all(np.array_equal(got[k], want[k]) for k in want)
    return names


@pytest.mark.integration
def test_training_state_lives_on_the_store_and_a_resumed_run_equals_an_uninterrupted_one(stores, tmp_path):
    """A run whose --out is a gs:// prefix keeps its whole state there: a second machine (here: a second call with
    nothing local) resumes from the store, and the loss curve equals one run straight through locally."""
    import torch

    from elmo import storage
    from elmo.training.train import main as train_main
    from tests.test_train import TINY_OPTIONS

    corpus = _tiny_training_corpus(tmp_path)
    (corpus / "options.json").write_text(json.dumps(TINY_OPTIONS))
    argv = ["--train", str(corpus / "train-0.txt"), "--vocab", str(corpus / "vocab.txt")]
    argv += ["--options", str(corpus / "options.json"), "--batch-size", "4", "--unroll-steps", "10"]
    argv += ["--n-negative-samples", "32", "--threads", "1", "--max-steps", "8", "--checkpoint-every", "3"]
    assert train_main([*argv, "--out", str(tmp_path / "local")]) == 0
    straight = torch.load(tmp_path / "local" / "checkpoint-rank0.pt", weights_only=True)["history"]
    remote = f"gs://{BUCKETS['gs']}/train-run"
    assert train_main([*argv, "--out", remote, "--max-hours", "1e-9"]) == 0  # stops (and checkpoints) after step 1
    assert _objects(remote) == ["checkpoint-rank0.pt"]
    assert train_main([*argv, "--out", remote]) == 0  # resumes from the store
    storage.download_file(f"{remote}/checkpoint-rank0.pt", tmp_path / "fetched.pt")
    resumed = torch.load(tmp_path / "fetched.pt", weights_only=True)
    assert resumed["step"] == 8
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in straight]
    # the store's checkpoint exports directly, like a local one
    assert train_main(["--export-checkpoint", f"{remote}/checkpoint-rank0.pt", "--export", str(tmp_path / "m")]) == 0
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "options.json",
        "training.json",
        "vocab.txt",
        "weights.hdf5",
    ]
    assert train_main(["--export-checkpoint", f"{remote}/no-such.pt", "--export", str(tmp_path / "n")]) == 2


def _tiny_training_corpus(tmp_path: Path) -> Path:
    from elmo.training.vocab import Vocabulary
    from tests.conftest import golden_batches

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = [" ".join(s) for batch in golden_batches("skip") for s in batch]
    (corpus / "train-0.txt").write_text("\n".join(lines * 4) + "\n")
    (corpus / "heldout.txt").write_text("\n".join(lines[:3]) + "\n")
    Vocabulary.build([line.split() for line in lines], min_count=2).save(str(corpus / "vocab.txt"))
    return corpus


@pytest.mark.integration
@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_pipeline_reads_model_and_inputs_and_writes_outputs_on_the_store(stores, scheme, tmp_path):
    started = time.monotonic()
    summary = _run_remote(scheme, "e2e")
    print(f"{scheme}: {time.monotonic() - started:.1f} s")
    _same_as_reference(summary, stores["reference"], tmp_path)


def _first_bytes_of_a_request(port: int, timeout: float, connection=None) -> bytes:
    """Sends a bucket listing on ``connection`` (or a new one to ``port``); returns the first bytes of the answer."""
    import socket

    conn = connection or socket.create_connection(("127.0.0.1", port), timeout=timeout)
    with conn:
        conn.settimeout(timeout)
        conn.sendall(b"GET /storage/v1/b HTTP/1.1\r\nHost: test\r\n\r\n")
        return conn.recv(64)


@pytest.mark.integration
def test_a_request_refused_on_an_open_connection_leaves_the_gcs_emulator_serving(stores):
    """The fault proxy's own health: a connection it accepted just before an outage gets its request answered 503,
    and the single-threaded emulator behind it (connected, waiting for that request) is released at once, not left
    waiting for ever with every later gs:// test failing (as in one CI run)."""
    import socket

    proxy = stores["servers"]["gs"].proxy
    assert _first_bytes_of_a_request(proxy.port, 5).startswith(b"HTTP/1.0 200")
    waiting = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    time.sleep(0.5)  # the proxy has connected it to the emulator
    proxy.fail_for(1.0, drop_open=False)
    try:
        assert _first_bytes_of_a_request(proxy.port, 5, waiting).startswith(b"HTTP/1.1 503")
        time.sleep(1.2)
    finally:
        proxy.heal()
    assert _first_bytes_of_a_request(proxy.port, 5).startswith(b"HTTP/1.0 200")  # within 5 s, not the 30 s backstop


# the first download of input data, then the first staged output shard (Beam writes beam-temp-* files first)
# GCS media downloads: Beam 2.62 built the URL from the object name (``o/in%2F...``); Beam 2.77 follows the
# ``mediaLink`` the server lists, which the emulator writes with a plain slash (``o/in/...``).
INPUT_READ = {"gs": r"GET /download/storage/v1/b/\S+/o/in(%2F|/)|GET \S+/o/in%2F\S+alt=media", "s3": r"GET /[^/]+/in/"}
SHARD_WRITE = {"gs": r"POST /upload/storage/v1/b/", "s3": r"beam-temp"}


@pytest.mark.integration
@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_store_outage_mid_run_is_retried_and_nothing_is_lost(stores, scheme, tmp_path):
    """The store fails every request (503, open connections dropped) for 3 s when the job first reads input data,
    and again for 3 s when it first writes an output shard; the run completes with the reference output."""
    proxy = stores["servers"][scheme].proxy
    before = proxy.failed
    proxy.fail_when(INPUT_READ[scheme], 3.0)
    proxy.fail_when(SHARD_WRITE[scheme], 3.0)
    try:
        started = time.monotonic()
        summary = _run_remote(scheme, "outage")
        seconds = time.monotonic() - started
    finally:
        fired = not proxy.armed
        proxy.heal()
    failed = proxy.failed - before
    print(f"{scheme}: {failed} requests failed by the proxy; run took {seconds:.1f} s")
    print("\n".join(f"  {t:8.2f} {what}" for t, what in proxy.events[-failed - 2 :]))
    assert fired and failed >= 2
    _same_as_reference(summary, stores["reference"], tmp_path)


@pytest.mark.integration
def test_gcs_server_killed_and_restarted_mid_run(stores, tmp_path):
    """The GCS emulator is SIGKILLed when the job first reads input data and comes back 3 s later on the same port
    with the same (on-disk) objects; the clients' retries carry the run through with identical output."""
    server = stores["servers"]["gs"]
    before = server.proxy.failed
    server.proxy.fail_when(INPUT_READ["gs"], 0, action=lambda: server.kill_and_restart(3.0))
    server.proxy.fail_when(SHARD_WRITE["gs"], 0, action=lambda: server.kill_and_restart(3.0))
    try:
        summary = _run_remote("gs", "restart")
    finally:
        server.proxy.heal()
    failed = server.proxy.failed - before
    print(f"gs: killed and restarted {server.restarts}x; {failed} requests failed")
    print("\n".join(f"  {t:8.2f} {what}" for t, what in server.proxy.events[-failed - 3 :]))
    assert server.restarts == 2
    _same_as_reference(summary, stores["reference"], tmp_path)


def _objects(url: str) -> list[str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return sorted(p[len(root.rstrip("/")) + 1 :] for p in fs.find(root))


@pytest.mark.integration
def test_killed_run_leaves_no_success_and_a_rerun_replaces_it(stores, tmp_path):
    """A run killed (SIGKILL) while writing its shards leaves no ``_SUCCESS``; re-running the same run id
    replaces everything (stale shards of an older attempt with another shard count included), no duplicates."""
    import fsspec

    scheme, bucket = "s3", BUCKETS["s3"]
    run_dir = f"{scheme}://{bucket}/out/killed"
    with fsspec.open(f"{run_dir}/_SUCCESS", "wb") as f:  # an older, complete attempt with 3 shards
        f.write(b"older attempt")
    with fsspec.open(f"{run_dir}/sentences/part-00002-of-00003.parquet", "wb") as f:
        f.write(b"older shard")
    proxy = stores["servers"][scheme].proxy
    proxy.fail_when(r"/out/killed/vertex/beam-temp", 120.0)  # the store goes away mid-write ...
    argv = [
        sys.executable,
        "-m",
        "pipeline.run",
        f"--input={scheme}://{bucket}/in/*",
        f"--output={scheme}://{bucket}/out",
        f"--model={scheme}://{bucket}/models/tiny",
        "--run_id=killed",
    ]
    job = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while proxy.armed and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert job.poll() is None, job.stderr.read().decode()[-3000:]
        assert not proxy.armed, "the job never wrote a shard"
        refused = proxy.refusals()
        while proxy.refusals() == refused and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.poll() is None and proxy.refusals() > refused, "the job did not retry during the outage"
        job.kill()  # ... and the job is killed while it retries
        job.wait(30)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        job.stderr.close()
        proxy.heal()
    left = _objects(run_dir)
    print(f"the killed run left {left}")
    assert "_SUCCESS" not in left and "sentences/part-00002-of-00003.parquet" not in left
    summary = _run_remote(scheme, "killed")
    names = _same_as_reference(summary, stores["reference"], tmp_path)  # exactly the outputs + manifest
    assert not any("beam-temp" in n for n in names)
    print(f"killed run left {len(left)} objects; the re-run holds {len(names)}")


@pytest.mark.integration
def test_model_files_are_fetched_once_per_process_into_a_content_addressed_cache(stores, tmp_path, monkeypatch):
    from elmo import Elmo, model_cache
    from transforms.files import localize_directory

    monkeypatch.setenv("ELMO_MODEL_CACHE", str(tmp_path / "cache"))
    url = f"gs://{BUCKETS['gs']}/models/cache-test"
    upload_tree(TINY_MODEL, url, MODEL_FILES)
    start = model_cache.fetch_count()
    local = localize_directory(url, ("options.json", "weights.hdf5"))  # the pipeline's path (Beam filesystems)
    assert model_cache.fetch_count() == start + 2
    for _ in range(3):  # the model handler's load_model, once per DoFn instance or bundle
        assert localize_directory(url, ("options.json", "weights.hdf5")) == local
    model = Elmo.from_directory(url)  # the elmo API's path (fsspec): same process, same files -> no fetch
    assert model_cache.fetch_count() == start + 2
    assert model.fingerprint == Elmo.from_directory(TINY_MODEL).fingerprint
    assert Path(local).parent == tmp_path / "cache" / "content"
    model_cache._MEMO.clear()  # as a new process on the same machine: found through the index, not fetched
    assert localize_directory(url, ("options.json", "weights.hdf5")) == local
    assert model_cache.fetch_count() == start + 2
    options = json.loads((TINY_MODEL / "options.json").read_text())
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "options.json").write_text(json.dumps(options, indent=4))  # same model, other bytes
    upload_tree(changed, url)
    model_cache._MEMO.clear()
    other = localize_directory(url, ("options.json", "weights.hdf5"))
    assert other != local and model_cache.fetch_count() == start + 4  # a changed object is fetched again
    assert sorted(p.name for p in (tmp_path / "cache" / "content").iterdir()) == sorted(
        [Path(local).name, Path(other).name]
    )  # no staging directories left behind


@pytest.mark.integration
def test_processes_sharing_the_model_cache_fetch_concurrently_without_corrupting_it(stores, tmp_path):
    """Three processes on one machine fetch the same remote model into one empty cache at the same time: each gets
    a complete copy, all the same directory; no staging directory is left behind."""
    cache = tmp_path / "shared-cache"
    code = (  # imported first, then all start at the same moment
        "import sys, time; from elmo import model_cache; time.sleep(max(0.0, float(sys.argv[2]) - time.time())); "
        "print(model_cache.cached_files(sys.argv[1], ('options.json', 'weights.hdf5')), model_cache.fetch_count())"
    )
    url = f"s3://{BUCKETS['s3']}/models/tiny"
    env = {**os.environ, "ELMO_MODEL_CACHE": str(cache)}
    start = str(time.time() + 10)
    jobs = [
        subprocess.Popen([sys.executable, "-c", code, url, start], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [job.communicate(timeout=120)[0].split() for job in jobs]
    assert all(job.returncode == 0 for job in jobs)
    directories = {directory for directory, _ in results}
    assert len(directories) == 1
    (directory,) = directories
    assert sorted(p.name for p in (cache / "content").iterdir()) == [Path(directory).name]
    for name in ("options.json", "weights.hdf5"):
        assert (Path(directory) / name).read_bytes() == (TINY_MODEL / name).read_bytes()
    print(f"fetches per process: {[int(n) for _, n in results]}")


@pytest.mark.integration
@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_elmo_api_and_embed_command_read_and_write_urls(stores, scheme, tmp_path):
    from elmo import Elmo
    from elmo.embed import main

    bucket = BUCKETS[scheme]
    model_url = f"{scheme}://{bucket}/models/tiny"
    remote = Elmo.load(f"{model_url}/options.json", f"{model_url}/weights.hdf5")
    local = Elmo.from_directory(TINY_MODEL)
    assert remote.fingerprint == local.fingerprint == Elmo.from_directory(model_url).fingerprint
    lines = tmp_path / "sentences.txt"
    lines.write_text("The cat sat .\nA bank by the river .\n", encoding="utf-8")
    upload_tree(tmp_path, f"{scheme}://{bucket}/cli")
    argv = ["--options", f"{model_url}/options.json", "--weights", f"{model_url}/weights.hdf5", "--top"]
    remote_io = ["--input", f"{scheme}://{bucket}/cli/sentences.txt", "--output", f"{scheme}://{bucket}/cli/out.hdf5"]
    assert main([*argv, *remote_io]) == 0
    assert main([*argv, "--input", str(lines), "--output", str(tmp_path / "local.hdf5")]) == 0
    download_tree(f"{scheme}://{bucket}/cli", tmp_path / "back")
    with h5py.File(tmp_path / "back" / "out.hdf5") as got, h5py.File(tmp_path / "local.hdf5") as want:
        assert set(got) == set(want) == {"0", "1", "sentence_to_index"}
        assert all(np.array_equal(got[k][...], want[k][...]) for k in ("0", "1"))
    remote.save(f"{scheme}://{bucket}/saved/options.json", f"{scheme}://{bucket}/saved/weights.hdf5")
    assert Elmo.from_directory(f"{scheme}://{bucket}/saved").fingerprint == local.fingerprint


@pytest.mark.integration
@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_model_fetch_rides_out_a_short_outage(stores, scheme, tmp_path, monkeypatch):
    from elmo import Elmo, retries

    monkeypatch.setenv("ELMO_MODEL_CACHE", str(tmp_path / "cache"))
    url = f"{scheme}://{BUCKETS[scheme]}/models/outage-{scheme}"
    upload_tree(TINY_MODEL, url, MODEL_FILES)
    proxy = stores["servers"][scheme].proxy
    before, ours = proxy.failed, retries.retries_done()
    proxy.fail_for(2.0)
    try:
        model = Elmo.from_directory(url)
    finally:
        proxy.heal()
    print(f"{scheme}: {proxy.failed - before} requests failed, {retries.retries_done() - ours} retries of ours")
    assert proxy.failed > before
    assert model.fingerprint == Elmo.from_directory(TINY_MODEL).fingerprint


@pytest.mark.integration
def test_persistent_store_failure_fails_with_the_url(stores, monkeypatch):
    """A store that keeps failing: the model fetch gives up after its retries with a message naming the URL;
    a bucket that does not exist fails the job before it starts, naming the input."""
    import s3fs

    from elmo import Elmo, retries

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setenv(retries.ATTEMPTS_ENV, "2")
    s3fs.S3FileSystem.clear_instance_cache()
    proxy = stores["servers"]["s3"].proxy
    url = f"s3://{BUCKETS['s3']}/models/tiny-unreachable"
    proxy.fail_for(600)
    started = time.monotonic()
    try:
        with pytest.raises(OSError, match=re.escape(url)) as failure:
            Elmo.from_directory(url)
    finally:
        proxy.heal()
        s3fs.S3FileSystem.clear_instance_cache()
    print(f"persistent outage reported after {time.monotonic() - started:.1f} s: {failure.value}")
    with pytest.raises(Exception, match=re.escape("s3://no-such-bucket-elmo/in/*")) as failure:
        run_job_summary("s3://no-such-bucket-elmo/out", input_glob="s3://no-such-bucket-elmo/in/*")
    print(f"missing bucket: {failure.value}")


@pytest.mark.integration
def test_mixed_locations_in_two_worker_processes(stores, tmp_path):
    """Local input, model on GCS, output on S3, in 2 SDK worker processes: the environment (endpoints, credentials,
    retry settings) reaches the workers and so do our Beam fixes (an empty ``errors/`` shard written to S3)."""
    summary = run_job_summary(
        f"s3://{BUCKETS['s3']}/out",
        f"--model=gs://{BUCKETS['gs']}/models/tiny",
        "--run_id=mixed",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
        input_glob=f"{stores['local_input']}/*",
    )
    _same_as_reference(summary, stores["reference"], tmp_path, atol=1e-4)  # other batches: float32 rounding


def test_credentials_in_flags_are_refused_before_anything_runs():
    from pipeline.run import run

    with pytest.raises(ValueError, match="credentials are not taken from flags") as refused:
        run(["--input=s3://bucket/in/*", "--output=s3://bucket/out", "--s3_secret_access_key=hunter2"])
    assert "hunter2" not in str(refused.value)


@pytest.mark.integration
def test_training_reads_its_data_from_s3_and_exports_to_gs(stores, tmp_path):
    from elmo import Elmo
    from elmo.training.train import main as train_main
    from tests.test_train import TINY_OPTIONS

    corpus = _tiny_training_corpus(tmp_path)
    (corpus / "options.json").write_text(json.dumps(TINY_OPTIONS))
    data = f"s3://{BUCKETS['s3']}/corpus"
    upload_tree(corpus, data)
    export = f"gs://{BUCKETS['gs']}/trained"
    argv = ["--train", f"{data}/train-*.txt", "--heldout", f"{data}/heldout.txt", "--vocab", f"{data}/vocab.txt"]
    argv += ["--options", f"{data}/options.json", "--out", str(tmp_path / "run"), "--export", export]
    argv += ["--batch-size", "4", "--unroll-steps", "10", "--max-steps", "3", "--n-negative-samples", "32"]
    assert train_main([*argv, "--threads", "1", "--eval-every", "1000", "--log-every", "1000"]) == 0
    assert _objects(export) == ["options.json", "training.json", "vocab.txt", "weights.hdf5"]
    assert Elmo.from_directory(export).embed_sentence(["A", "test", "."]).shape == (3, 3, 32)


@pytest.mark.integration
@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_a_nightly_day2_on_the_store_carries_day1_and_equals_a_full_run(stores, scheme, tmp_path):
    """Day 1 and day 2 (every 10th document edited, a line inserted at the top) with input, previous run and
    output on the store: day 2 embeds only the edits and equals a full local run on day 2's input."""
    import fsspec

    bucket = BUCKETS[scheme]
    day2 = tmp_path / "day2"
    shutil.copytree(stores["local_input"], day2)
    lines = (day2 / "1790-washington.txt").read_text().splitlines()
    edited = [line + " The committee met on a Tuesday." if i % 10 == 3 else line for i, line in enumerate(lines)]
    (day2 / "1790-washington.txt").write_text("\n".join(["A new first line about canals.", *edited]) + "\n")
    upload_tree(day2, f"{scheme}://{bucket}/in-day2")
    out, model = f"{scheme}://{bucket}/nightly", f"--model={scheme}://{bucket}/models/tiny"
    run_job_summary(out, model, "--run_date=2026-11-01", input_glob=f"{scheme}://{bucket}/in/*")
    two = run_job_summary(
        out, model, "--run_date=2026-11-02", "--previous_run=latest", input_glob=f"{scheme}://{bucket}/in-day2/*"
    )
    full = run_job_summary(tmp_path / "full", "--run_id=full", input_glob=f"{day2}/*")
    counts = two["counts"]
    assert two["previous_run"]["mode"] == "incremental" and two["reconciled"]
    assert (
        0 < counts["sentences_embedded"] < counts["sentences"] / 4
        and counts["sentences"] == full["counts"]["sentences"]
    )
    download_tree(two["run_dir"], tmp_path / "downloaded")
    got, want = sentence_vectors(tmp_path / "downloaded"), sentence_vectors(Path(full["run_dir"]))
    assert got.keys() == want.keys()
    assert max(float(np.abs(got[k] - want[k]).max()) for k in want) <= 1e-4
    with fsspec.open(f"{out}/LATEST", "r") as f:
        assert json.load(f)["run_dir"] == two["run_dir"]
