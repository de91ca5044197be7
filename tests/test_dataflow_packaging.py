"""Dataflow, checked offline: the launcher's flags and checks, the job DataflowRunner would submit (built without
contacting Google), the Flex Template metadata, the worker Dockerfile's pins, and the GPU fail-fast check.

Nothing here submits a job or reaches Google: the job test blocks every socket connection and fails on any
attempt. What these tests cannot show (the image builds, the driver works, Dataflow accepts the job) is listed in
docs/dataflow.md.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.dataflow import (
    Accelerator,
    DataflowConfigError,
    complete_argv,
    dataflow_flags,
    flex_argv,
    parse_accelerator,
)
from pipeline.options import option_names
from tests.beam_testing import REPO, SAMPLE_GLOB, TINY_MODEL, source_runner_script
from transforms.gpu import check_device

PROJECT, REGION, BUCKET = "elmo-test-project", "us-central1", "gs://elmo-test-bucket"
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/elmo/elmo-beam-gpu:test"
BASE = [
    f"--project={PROJECT}",
    f"--region={REGION}",
    f"--temp_location={BUCKET}/tmp",
    f"--input={BUCKET}/text/*.jsonl.gz",
    f"--output={BUCKET}/emb",
    f"--model={BUCKET}/models/elmo-en-small",
]
NO_ENV: dict[str, str] = {}  # no ELMO_DATAFLOW_* variables from the environment of whoever runs the tests


def _flags(*extra: str, env=NO_ENV) -> list[str]:
    return dataflow_flags([*BASE, *extra], env=env)


def _setup_pins() -> dict[str, str]:
    """name -> version of every ``name==version`` pin in setup.py (parsed, not imported)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    pins = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;]+)", node.value)
            if m:
                pins[m.group(1).lower()] = m.group(3)
    return pins


# --- (a) options validation -------------------------------------------------------------------------------


def test_cpu_job_gets_the_runner_and_the_setup_file():
    assert _flags() == ["--runner=DataflowRunner", f"--setup_file={REPO / 'setup.py'}"]


def test_missing_settings_are_all_named_at_once():
    with pytest.raises(DataflowConfigError) as e:
        dataflow_flags([], env=NO_ENV)
    message = str(e.value)
    for needed in ("--project", "--region", "--temp_location", "--input", "--output", "--model="):
        assert needed in message


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--temp_location=/tmp/x", "must be a gs://bucket/path"),
        ("--staging_location=s3://b/x", "must be a gs://bucket/path"),
        ("--region=US Central", "not a region"),
        ("--project=X", "not a Google Cloud project id"),
        ("--input=/data/*.txt", "cannot read a local path"),
        ("--output=out", "cannot write a local path"),
        (f"--model={TINY_MODEL}", "cannot read the launcher's model folder"),
        ("--runner=FlinkRunner", "this is the Dataflow launcher"),
        ("--gpu_sharing=mps", "needs --gpu_type"),
    ],
)
def test_bad_settings_are_refused(flag, message):
    with pytest.raises(DataflowConfigError, match=re.escape(message)):
        _flags(flag)


def test_a_model_baked_into_the_image_is_accepted_only_there():
    argv = [*BASE, "--model=/opt/elmo/models/elmo-en-small"]
    with pytest.raises(DataflowConfigError, match="launcher's model folder"):
        dataflow_flags(argv, env=NO_ENV)
    assert dataflow_flags(argv, env={"ELMO_DATAFLOW_LOCAL_MODELS": "/opt/elmo/models"})


def test_gpu_flags_become_the_accelerator_option_device_machine_and_sharing():
    flags = _flags("--gpu_type=nvidia-l4", f"--sdk_container_image={IMAGE}")
    assert flags == [
        "--runner=DataflowRunner",
        "--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver",
        "--device=cuda",
        "--large_model",
        "--machine_type=g2-standard-8",
        f"--setup_file={REPO / 'setup.py'}",
    ]
    # idempotent: the launcher script, pipeline.run and the Flex launcher may each apply it
    assert dataflow_flags([*BASE, "--gpu_type=nvidia-l4", f"--sdk_container_image={IMAGE}", *flags], env=NO_ENV) == []


def test_gpu_sharing_choices():
    mps = _flags("--gpu_type=nvidia-tesla-t4", "--gpu_sharing=mps", env={"ELMO_DATAFLOW_IMAGE": IMAGE})
    spec = "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver;use_nvidia_mps"
    assert f"--dataflow_service_options={spec}" in mps
    assert "--large_model" not in mps and f"--sdk_container_image={IMAGE}" in mps
    assert "--machine_type=n1-standard-8" in mps
    single = _flags("--gpu_type=nvidia-l4", "--gpu_sharing=single_process", f"--sdk_container_image={IMAGE}")
    assert "--experiments=no_use_multiple_sdk_containers" in single and "--large_model" not in single


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--gpu_type=nvidia-l4"], "GPU workers need the CUDA worker image"),
        (["--gpu_type=nvidia-l4", f"--sdk_container_image={IMAGE}", "--machine_type=n1-standard-8"], "use g2-*"),
        (["--gpu_type=nvidia-l4", f"--sdk_container_image={IMAGE}", "--device=cpu"], "use cuda"),
        (["--gpu_type=nvidia-l4", f"--sdk_container_image={IMAGE}", "--gpu_count=2"], "use 1 GPU per worker"),
        (["--gpu_type=nvidia-l4", f"--sdk_container_image={IMAGE}", "--gpu_count=3"], "(1, 2, 4, 8) GPUs"),
        (
            [
                "--gpu_type=nvidia-l4",
                f"--sdk_container_image={IMAGE}",
                "--dataflow_service_options=worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver",
            ],
            "contradicts",
        ),
        (
            [f"--sdk_container_image={IMAGE}", "--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1"],
            "add ';install-nvidia-driver'",
        ),
    ],
)
def test_bad_gpu_settings_are_refused(extra, message):
    with pytest.raises(DataflowConfigError, match=re.escape(message)):
        _flags(*extra)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("worker_accelerator=type:nvidia-l4;count:1", "install-nvidia-driver"),
        ("worker_accelerator=type:nvidia-l4;count:3;install-nvidia-driver", "count must be one of"),
        ("worker_accelerator=type:nvidia-l4;count:one;install-nvidia-driver", "count must be a number"),
        ("worker_accelerator=type:tesla-t4;count:1;install-nvidia-driver", "type must be a GPU type"),
        ("worker_accelerator=count:1;install-nvidia-driver", "type must be a GPU type"),
        ("worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver;use_mps", "unknown or repeated field"),
        ("worker_accelerator=type:nvidia-l4;type:nvidia-l4;count:1;install-nvidia-driver", "unknown or repeated"),
        ("accelerator=type:nvidia-l4;count:1", "not a worker_accelerator option"),
    ],
)
def test_bad_accelerator_specs_are_rejected(spec, message):
    with pytest.raises(DataflowConfigError, match=re.escape(message)):
        parse_accelerator(spec)


def test_good_accelerator_specs_round_trip():
    for spec in (
        "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver",
        "worker_accelerator=type:nvidia-tesla-t4;count:4;install-nvidia-driver:latest;use_nvidia_mps",
    ):
        assert parse_accelerator(spec).option() == spec
    assert parse_accelerator("worker_accelerator=type:nvidia-tesla-a100;count:2;install-nvidia-driver") == (
        Accelerator("nvidia-tesla-a100", 2)
    )


def test_gpu_type_flag_is_validated_by_the_job_options():
    with pytest.raises(SystemExit):  # argparse refuses it like any bad flag value
        PipelineOptions(["--gpu_type=nvidia_l4"]).get_all_options()


def test_complete_argv_only_touches_dataflow_jobs():
    local = ["--input=x", "--output=y"]
    assert complete_argv(local) == local
    with pytest.raises(DataflowConfigError, match="Dataflow setting"):
        complete_argv([*local, "--gpu_type=nvidia-l4"])
    with pytest.raises(DataflowConfigError, match="--project is required"):
        complete_argv(["--runner=DataflowRunner"])


def test_flex_template_switches_take_true_and_false():
    assert flex_argv(["--token_vectors=true", "--batch_invariant=false", "--layers=top"]) == [
        "--token_vectors",
        "--layers=top",
    ]
    with pytest.raises(DataflowConfigError, match="expected true or false"):
        flex_argv(["--token_vectors=yes"])


def _source_runner_script(*args: str) -> subprocess.CompletedProcess:
    """Sources scripts/runner_dataflow.sh as run_pipeline.sh does, printing the runner_flags it appended."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELMO_DATAFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # run_pipeline.sh's venv python
    return source_runner_script("dataflow", *args, env=env)


def test_runner_script_adds_the_flags_or_stops_with_the_reasons():
    done = _source_runner_script(*BASE, "--gpu_type=nvidia-l4", f"--sdk_container_image={IMAGE}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == _flags("--gpu_type=nvidia-l4", f"--sdk_container_image={IMAGE}")
    failed = _source_runner_script("--project=elmo-test-project")
    assert failed.returncode == 2 and failed.stdout == ""
    assert "--region is required" in failed.stderr and "--temp_location=gs://BUCKET/tmp is required" in failed.stderr


# --- (b) the job DataflowRunner would submit, built offline -----------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Every TCP/UDP connection attempt fails the test (Unix sockets, used by nothing here, are let through)."""
    attempts = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family == socket.AF_UNIX:
            return real_connect(sock, address)
        attempts.append(address)
        raise OSError(f"test blocks network access: {address}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: connect(socket.socket(), address))
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    yield attempts
    assert attempts == [], f"network access attempted: {attempts}"


@pytest.mark.slow
def test_the_submitted_job_holds_our_graph_image_gpu_and_package(no_network, monkeypatch):
    import apache_beam as beam
    from apache_beam.runners.dataflow.internal import apiclient

    from pipeline.options import EmbedOptions
    from pipeline.plan import plan_run
    from pipeline.run import build_pipeline
    from transforms.run_folder import Owner

    # Input and model are read by the launcher (plan_run) before submission, so they are local here; output,
    # temp and staging are gs:// paths nothing touches before the job runs.
    argv = [
        f"--project={PROJECT}",
        f"--region={REGION}",
        f"--temp_location={BUCKET}/tmp",
        f"--input={SAMPLE_GLOB}",
        f"--output={BUCKET}/emb",
        f"--model={TINY_MODEL}",
        "--gpu_type=nvidia-l4",
        f"--sdk_container_image={IMAGE}",
    ]
    argv += dataflow_flags(argv, env=NO_ENV, remote_paths=False)
    # --dry_run: DataflowRunner builds the job (apiclient.Job) and returns before creating an API client;
    # --no_auth: the client made below to describe the job looks for no credentials (it sends nothing).
    argv += ["--dry_run=True", "--no_auth", "--job_name=elmo-offline-check"]
    options = PipelineOptions(argv)
    opts = options.view_as(EmbedOptions)
    plan = plan_run(opts)
    p = beam.Pipeline(options=options)
    build_pipeline(p, opts, plan, Owner.new())  # the claim itself happens on submission, in pipeline.run.run
    job = p.run().job

    # What `--dataflow_job_file` would write: DataflowApplicationClient.create_job_description stages the
    # packages and the pipeline proto, then fills in the job's environment. The only stub is the GCS upload
    # boundary, stage_file, which records what would be uploaded instead of uploading it.
    staged: dict[str, bytes] = {}

    def stage_file(self, folder, name, stream, mime_type=None, total_size=None):
        assert folder.startswith(f"{BUCKET}/tmp/elmo-offline-check.")
        staged[name] = stream.read()

    monkeypatch.setattr(apiclient.DataflowApplicationClient, "stage_file", stage_file)
    client = apiclient.DataflowApplicationClient(options, job.root_staging_location)
    client.create_job_description(job)
    request = json.loads(job.json())

    # the graph: every stage of the job, RunInference inside EmbedWindows
    names = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    for step in (
        "ReadDocuments",
        "DropDuplicateIds",
        "TokenizeDocuments",
        "WindowsOf",
        "EmbedWindows",
        "AssembleSentences",
        "WriteParquet",
        "WriteVertexJsonl",
        "WriteErrors",
        "WriteManifest",
    ):
        assert step in names
    assert any(n.startswith("EmbedWindows/") and n.endswith("RunInference") for n in names)

    environment = request["environment"]
    (pool,) = environment["workerPools"]
    assert pool["workerHarnessContainerImage"] == IMAGE
    assert [c["containerImage"] for c in pool["sdkHarnessContainerImages"]] == [IMAGE]
    assert pool["machineType"] == "g2-standard-8"
    assert environment["serviceOptions"] == ["worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"]
    assert "use_runner_v2" in environment["experiments"]
    assert request["type"] == "JOB_TYPE_BATCH" and request["name"] == "elmo-offline-check"

    # the options the workers get: GPU required, model shared across the VM's processes
    worker_options = environment["sdkPipelineOptions"]["options"]
    assert worker_options["device"] == "cuda" and worker_options["large_model"] is True
    assert worker_options["setup_file"] == str(REPO / "setup.py")

    # setup_file packaging: the sdist of this checkout is a worker package, with our three packages in it
    assert "workflow.tar.gz" in {pkg["name"] for pkg in pool["packages"]}
    assert {"workflow.tar.gz", "pipeline.pb"} <= set(staged)
    with tarfile.open(fileobj=io.BytesIO(staged["workflow.tar.gz"])) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    assert {"setup.py", "elmo/api.py", "pipeline/run.py", "transforms/model_handler.py"} <= members


# --- (c) Flex Template metadata ---------------------------------------------------------------------------

METADATA = json.loads((REPO / "dataflow" / "metadata.json").read_text())
SAMPLES = {  # parameter -> (accepted values, refused values)
    "input": (["gs://my-bucket/text/*.jsonl.gz", "gs://b-1.x/a/b/part-*"], ["/data/*.txt", "gs://", "s3://b/x"]),
    "output": (["gs://my-bucket/emb", "gs://my-bucket"], ["output", "gs://B/x"]),
    "model": (["gs://my-bucket/models/elmo-en-small", "/opt/elmo/models/elmo-en-small"], ["models/x", "/etc"]),
    "run_id": (["nightly-2026-11-25"], ["../x", ""]),
    "layers": (["all", "top", "average", "0,0,1", "1,1,1;gamma=0.5", "-1.5,2"], ["bogus", "1,,2"]),
    "dtype": (["float32", "float16"], ["float64"]),
    "num_shards": (["0", "1", "64"], ["-1", "two"]),
    "token_vectors": (["true", "false"], ["yes"]),
    "gpu_type": (["nvidia-l4", "nvidia-tesla-t4"], ["nvidia_l4", "tesla-t4"]),
    "gpu_count": (["1"], ["0", "2"]),
    "gpu_sharing": (["shared_model", "mps", "single_process"], ["shared"]),
    "max_batch_tokens": (["2048", "16384"], ["0", "-1", "2k"]),
    "input_format": (["auto", "text", "jsonl"], ["csv"]),
}


def test_metadata_parameters_are_job_flags_with_help_and_working_regexes():
    params = METADATA["parameters"]
    assert METADATA["name"] and METADATA["description"]
    names = [p["name"] for p in params]
    assert len(names) == len(set(names))
    assert set(names) <= option_names(), set(names) - option_names()
    assert {p["name"] for p in params if not p.get("isOptional")} == {"input", "output", "model"}
    for p in params:
        assert p["label"] and p["helpText"] and isinstance(p.get("isOptional", False), bool)
        assert p["regexes"], p["name"]
        for regex in p["regexes"]:
            re.compile(regex)
    by_name = {p["name"]: p for p in params}
    for name, (good, bad) in SAMPLES.items():
        regexes = [re.compile(r) for r in by_name[name]["regexes"]]
        for value in good:
            assert all(r.fullmatch(value) for r in regexes), (name, value)
        for value in bad:
            assert not all(r.fullmatch(value) for r in regexes), (name, value)


def test_metadata_values_are_accepted_by_the_launcher():
    """A launch with every parameter set to an accepted sample passes the launcher's own checks."""
    argv = [f"--project={PROJECT}", f"--region={REGION}", f"--temp_location={BUCKET}/tmp"]
    argv += [f"--{name}={good[0]}" for name, (good, _) in SAMPLES.items()]
    flags = dataflow_flags(flex_argv(argv), env={"ELMO_DATAFLOW_IMAGE": IMAGE, "ELMO_DATAFLOW_SETUP_FILE": "none"})
    assert "--device=cuda" in flags and f"--sdk_container_image={IMAGE}" in flags
    assert not any(f.startswith("--setup_file") for f in flags)


# --- (d) container files ----------------------------------------------------------------------------------


def _dockerfile(name: str) -> str:
    text = (REPO / "dataflow" / name).read_text()
    return re.sub(r"\\\n", " ", text)  # join continuation lines


def _args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S*)", text, flags=re.M))


def test_worker_dockerfile_matches_the_pins():
    text = _dockerfile("Dockerfile")
    pins, args = _setup_pins(), _args(text)
    assert args["BEAM_VERSION"] == pins["apache-beam"]
    assert args["TORCH_VERSION"] == pins["torch"]
    froms = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert froms[0] == "apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}" and args["PYTHON_VERSION"] == "3.11"
    assert froms[-1].startswith("nvidia/cuda:")  # the runtime stage is a CUDA image
    assert "COPY --from=beam /opt/apache/beam /opt/apache/beam" in text
    assert re.search(r'^ENTRYPOINT \["/opt/apache/beam/boot"\]', text, flags=re.M)
    assert 'pip install "torch==${TORCH_VERSION}"' in text and "pip install /opt/elmo" in text
    for copied in ("setup.py", "elmo", "pipeline", "transforms", "elmo/models", "dataflow"):
        assert re.search(rf"^COPY {copied}\b", text, flags=re.M), copied
        assert (REPO / copied).exists()


def test_flex_template_dockerfile_wires_the_launcher():
    text = _dockerfile("flex_template.Dockerfile")
    assert "FROM ${WORKER_IMAGE}" in text
    assert "python311-template-launcher-base" in text
    assert "/opt/google/dataflow/python_template_launcher" in text
    py_file = re.search(r"FLEX_TEMPLATE_PYTHON_PY_FILE=(\S+)", text).group(1)
    assert py_file == "/opt/elmo/dataflow/main.py" and (REPO / "dataflow" / "main.py").is_file()
    assert "ELMO_DATAFLOW_SETUP_FILE=none" in text and "ELMO_DATAFLOW_IMAGE=${WORKER_IMAGE}" in text


def test_dockerignore_keeps_the_venv_out_but_not_what_is_copied():
    for name in ("Dockerfile.dockerignore", "flex_template.Dockerfile.dockerignore"):
        ignored = {line.strip() for line in (REPO / "dataflow" / name).read_text().splitlines()}
        assert {".venv", ".git"} <= ignored
        assert not ignored & {"setup.py", "elmo", "pipeline", "transforms", "models", "dataflow"}


# --- (e) the GPU fail-fast check --------------------------------------------------------------------------


def test_gpu_check_raises_without_a_gpu_and_says_what_it_found(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine has none; be sure of it
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    for device in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(RuntimeError) as e:
            check_device(device)
        message = str(e.value)
        assert f"--device {device} asks for a GPU" in message
        assert "torch.cuda.is_available()=False" in message and "torch.cuda.device_count()=0" in message
        assert "worker_accelerator" in message
    assert check_device("cpu") == "cpu"


def test_gpu_check_refuses_a_device_index_beyond_the_count(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA L4")
    assert check_device("cuda:0") == "cuda:0"
    with pytest.raises(RuntimeError, match="only 1"):
        check_device("cuda:1")
    with pytest.raises(ValueError, match="cuda or cuda:N"):
        check_device("cuda:x")
