"""Google Cloud Dataflow: the flags a Dataflow job of this pipeline needs, checked before anything is submitted.

One implementation behind three entry points (docs/dataflow.md):

- ``scripts/runner_dataflow.sh`` (sourced by ``./run_pipeline.sh dataflow ...``) runs ``python -m pipeline.dataflow
  ARGS...``, which prints the flags to add, one per line, or exits with status 2 and a message naming every
  missing or malformed setting;
- ``dataflow/main.py``, the Flex Template's launcher program, calls ``launch(argv)``;
- ``complete_argv(argv)`` for ``pipeline.run`` itself (``python -m pipeline.run --runner=DataflowRunner ...``).

``dataflow_flags`` is idempotent: given its own output back it adds nothing, so the three can be stacked.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from apache_beam.options.pipeline_options import (
    DebugOptions,
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)

from pipeline.options import GPU_TYPE_RE, EmbedOptions

REPO = Path(__file__).resolve().parent.parent
DATAFLOW_RUNNERS = ("DataflowRunner", "dataflow", "TestDataflowRunner")
# Environment of the launcher (set in the Flex Template image, or by the user):
IMAGE_ENV = "ELMO_DATAFLOW_IMAGE"  # default --sdk_container_image
SETUP_FILE_ENV = "ELMO_DATAFLOW_SETUP_FILE"  # default --setup_file; "none": ship no sdist (the image has the code)
LOCAL_MODELS_ENV = "ELMO_DATAFLOW_LOCAL_MODELS"  # a folder baked into the worker image: --model may point into it
# Dataflow accelerator counts and the machine families that take a GPU (others are refused by the service).
GPU_COUNTS = (1, 2, 4, 8)
GPU_MACHINES = {  # type -> (machine-type prefix it needs, default machine type)
    "nvidia-l4": ("g2-", "g2-standard-8"),
    "nvidia-tesla-t4": ("n1-", "n1-standard-8"),
    "nvidia-tesla-v100": ("n1-", "n1-standard-8"),
    "nvidia-tesla-p4": ("n1-", "n1-standard-8"),
    "nvidia-tesla-p100": ("n1-", "n1-standard-8"),
    "nvidia-tesla-a100": ("a2-", "a2-highgpu-1g"),
    "nvidia-a100-80gb": ("a2-", "a2-ultragpu-1g"),
    "nvidia-h100-80gb": ("a3-", "a3-highgpu-1g"),
}
PROJECT_RE = re.compile(r"([a-z][-a-z0-9.]*:)?[a-z][-a-z0-9]{4,28}[a-z0-9]")  # optional domain: prefix
REGION_RE = re.compile(r"[a-z]+-[a-z]+[0-9]+")
GCS_RE = re.compile(r"gs://[a-z0-9][-_.a-z0-9]{1,220}[a-z0-9](/.*)?")
REMOTE_RE = re.compile(r"(gs|s3)://[^/]+(/.*)?")


class DataflowConfigError(ValueError):
    """The job cannot be submitted to Dataflow as configured; the message lists every problem."""


@dataclass(frozen=True)
class Accelerator:
    """A parsed ``worker_accelerator`` service option."""

    gpu_type: str
    count: int
    install_driver: bool = True
    driver_version: str | None = None
    mps: bool = False

    def option(self) -> str:
        """The ``--dataflow_service_options`` value, in Dataflow's syntax."""
        parts = [f"type:{self.gpu_type}", f"count:{self.count}"]
        if self.install_driver:
            parts.append("install-nvidia-driver" + (f":{self.driver_version}" if self.driver_version else ""))
        if self.mps:
            parts.append("use_nvidia_mps")
        return "worker_accelerator=" + ";".join(parts)


def parse_accelerator(option: str) -> Accelerator:
    """Parses ``worker_accelerator=type:T;count:N;install-nvidia-driver[:V][;use_nvidia_mps]``; raises
    ``DataflowConfigError`` on anything else (Dataflow would refuse it only after staging, or start workers
    without a driver)."""
    prefix = "worker_accelerator="
    if not option.startswith(prefix):
        raise DataflowConfigError(f"not a worker_accelerator option: {option!r}")
    fields = option[len(prefix) :].split(";")
    gpu_type = count = driver_version = None
    install_driver = mps = False
    for field in fields:
        key, _, value = field.partition(":")
        if key == "type" and gpu_type is None:
            gpu_type = value
        elif key == "count" and count is None:
            if not value.isdigit():
                raise DataflowConfigError(f"{option!r}: count must be a number, got {value!r}")
            count = int(value)
        elif key == "install-nvidia-driver" and not install_driver:
            install_driver, driver_version = True, value or None
        elif field == "use_nvidia_mps" and not mps:
            mps = True
        else:
            raise DataflowConfigError(f"{option!r}: unknown or repeated field {field!r}")
    if not gpu_type or not GPU_TYPE_RE.fullmatch(gpu_type):
        raise DataflowConfigError(f"{option!r}: type must be a GPU type like nvidia-l4, got {gpu_type!r}")
    if count not in GPU_COUNTS:
        raise DataflowConfigError(f"{option!r}: count must be one of {GPU_COUNTS}, got {count!r}")
    if not install_driver:
        raise DataflowConfigError(
            f"{option!r}: add ';install-nvidia-driver' (the worker images carry CUDA libraries, not a driver)"
        )
    return Accelerator(gpu_type, count, install_driver, driver_version, mps)


def _has_flag(argv: list[str], name: str) -> bool:
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in argv)


def dataflow_flags(
    argv: list[str], env: dict[str, str] | None = None, remote_paths: bool = True, repo: Path = REPO
) -> list[str]:
    """The flags to add to ``argv`` for a Dataflow job; raises ``DataflowConfigError`` listing every problem.

    Adds: ``--runner=DataflowRunner``; ``--setup_file`` (``$ELMO_DATAFLOW_SETUP_FILE``, else this checkout's
    setup.py); ``--sdk_container_image`` from ``$ELMO_DATAFLOW_IMAGE``; and for ``--gpu_type`` the
    ``worker_accelerator`` service option, ``--device=cuda``, a machine type that takes the GPU and the settings
    of ``--gpu_sharing``. ``remote_paths=False`` (offline tests only) lets input, output and model be local.
    """
    env = os.environ if env is None else env
    options = PipelineOptions(argv)
    std = options.view_as(StandardOptions)
    cloud = options.view_as(GoogleCloudOptions)
    worker = options.view_as(WorkerOptions)
    setup = options.view_as(SetupOptions)
    debug = options.view_as(DebugOptions)
    job = options.view_as(EmbedOptions)
    errors: list[str] = []
    flags: list[str] = []

    if std.runner is None:
        flags.append("--runner=DataflowRunner")
    elif std.runner not in DATAFLOW_RUNNERS:
        errors.append(f"--runner={std.runner}: this is the Dataflow launcher (DataflowRunner)")

    if not cloud.project:
        errors.append("--project is required (the Google Cloud project that runs and pays for the job)")
    elif not PROJECT_RE.fullmatch(cloud.project):
        errors.append(f"--project={cloud.project}: not a Google Cloud project id")
    if not cloud.region:
        errors.append("--region is required (the Dataflow regional endpoint, e.g. us-central1)")
    elif not REGION_RE.fullmatch(cloud.region):
        errors.append(f"--region={cloud.region}: not a region like us-central1")
    for name in ("temp_location", "staging_location"):
        value = getattr(cloud, name)
        if value and not GCS_RE.fullmatch(value):
            errors.append(f"--{name}={value}: must be a gs://bucket/path")
    if not cloud.temp_location:
        errors.append("--temp_location=gs://BUCKET/tmp is required (Dataflow's temporary files)")

    if not job.input:
        errors.append("--input is required (a gs:// glob of the text shards)")
    if not _has_flag(argv, "output"):
        errors.append("--output is required (a gs:// prefix; the run is written under <output>/<run_id>/)")
    if remote_paths:
        if job.input and not REMOTE_RE.fullmatch(job.input):
            errors.append(f"--input={job.input}: Dataflow workers cannot read a local path; use gs://")
        if _has_flag(argv, "output") and not REMOTE_RE.fullmatch(job.output):
            errors.append(f"--output={job.output}: Dataflow workers cannot write a local path; use gs://")
        local_models = env.get(LOCAL_MODELS_ENV)
        baked = local_models and os.path.abspath(job.model).startswith(os.path.abspath(local_models) + os.sep)
        if not REMOTE_RE.fullmatch(job.model) and not baked:
            errors.append(
                f"--model={job.model}: the workers cannot read the launcher's model folder; copy it to gs:// "
                "(gcloud storage cp -r elmo/models/elmo-en-small gs://BUCKET/models/) and pass --model gs://..."
            )

    # GPU: the simple flags, or a worker_accelerator option given as is
    given = [o for o in (cloud.dataflow_service_options or []) if o.startswith("worker_accelerator=")]
    accelerator = None
    if len(given) > 1:
        errors.append(f"more than one worker_accelerator service option: {given}")
    elif given:
        try:
            accelerator = parse_accelerator(given[0])
        except DataflowConfigError as e:
            errors.append(str(e))
    if job.gpu_type:
        if job.gpu_count not in GPU_COUNTS:
            errors.append(f"--gpu_count={job.gpu_count}: Dataflow attaches {GPU_COUNTS} GPUs per worker")
        wanted = Accelerator(job.gpu_type, job.gpu_count, mps=job.gpu_sharing == "mps")
        if accelerator is None and not given:
            flags.append(f"--dataflow_service_options={wanted.option()}")
            accelerator = wanted
        elif accelerator is not None and (accelerator.gpu_type, accelerator.count, accelerator.mps) != (
            wanted.gpu_type,
            wanted.count,
            wanted.mps,
        ):
            errors.append(
                f"--gpu_type={job.gpu_type} --gpu_count={job.gpu_count} --gpu_sharing={job.gpu_sharing} "
                f"contradicts --dataflow_service_options={given[0]}; give one of them"
            )
    if accelerator is not None:
        if accelerator.count > 1:
            errors.append(
                f"{accelerator.count} GPUs per worker: every model copy goes to cuda:0 for now; use 1 GPU per worker "
                "and more workers (--max_num_workers)"
            )
        if job.device == "auto":
            flags.append("--device=cuda")  # fail fast on a worker without the GPU instead of running on its CPU
        elif not job.device.startswith("cuda"):
            errors.append(f"--device={job.device} on GPU workers: use cuda (or leave the default)")
        sharing = "mps" if accelerator.mps else job.gpu_sharing
        if sharing == "shared_model" and not job.large_model and job.model_copies is None:
            flags.append("--large_model")
        if sharing == "single_process" and "no_use_multiple_sdk_containers" not in (debug.experiments or []):
            flags.append("--experiments=no_use_multiple_sdk_containers")
        prefix, default_machine = GPU_MACHINES.get(accelerator.gpu_type, (None, None))
        if worker.machine_type is None and default_machine:
            flags.append(f"--machine_type={default_machine}")
        elif worker.machine_type and prefix and not worker.machine_type.startswith(prefix):
            errors.append(f"--machine_type={worker.machine_type} cannot take {accelerator.gpu_type}: use {prefix}*")
        if not worker.sdk_container_image and not env.get(IMAGE_ENV):
            errors.append(
                f"GPU workers need the CUDA worker image: --sdk_container_image=REGION-docker.pkg.dev/PROJECT/REPO/"
                f"elmo-beam-gpu:TAG (or ${IMAGE_ENV}); build it from dataflow/Dockerfile (docs/dataflow.md)"
            )
    elif job.gpu_sharing != "shared_model":
        errors.append(f"--gpu_sharing={job.gpu_sharing} needs --gpu_type")

    if not worker.sdk_container_image and env.get(IMAGE_ENV):
        flags.append(f"--sdk_container_image={env[IMAGE_ENV]}")
    if not setup.setup_file:
        setup_file = env.get(SETUP_FILE_ENV) or str(repo / "setup.py")
        if setup_file != "none":
            if not os.path.isfile(setup_file):
                errors.append(f"--setup_file {setup_file} does not exist")
            flags.append(f"--setup_file={setup_file}")

    if errors:
        raise DataflowConfigError("cannot submit to Dataflow:\n  - " + "\n  - ".join(errors))
    return flags


def is_dataflow(argv: list[str]) -> bool:
    """Whether ``argv`` selects the Dataflow runner."""
    return PipelineOptions(argv).view_as(StandardOptions).runner in DATAFLOW_RUNNERS


def complete_argv(argv: list[str]) -> list[str]:
    """``argv`` plus ``dataflow_flags`` when it selects Dataflow (checked); else ``argv`` unchanged, refusing
    ``--gpu_type`` (a Dataflow setting) on other runners."""
    if is_dataflow(argv):
        return [*argv, *dataflow_flags(argv)]
    if PipelineOptions(argv).view_as(EmbedOptions).gpu_type:
        raise DataflowConfigError("--gpu_type is a Dataflow setting; on other runners use --device cuda")
    return argv


def flex_argv(argv: list[str]) -> list[str]:
    """A Flex Template passes every parameter as ``--name=value``; the job's on/off flags (``--token_vectors``,
    ``--batch_invariant``, ``--large_model``) take no value, so ``=true`` becomes the bare flag and ``=false``
    drops it. Anything else is refused with the parameter's name."""
    from pipeline.options import job_parser

    switches = {a.option_strings[0] for a in job_parser()._actions if a.nargs == 0 and a.option_strings[0] != "-h"}
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if eq and name in switches:
            if value.lower() == "true":
                out.append(name)
            elif value.lower() != "false":
                raise DataflowConfigError(f"{name}={value}: expected true or false")
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.dataflow ARGS``: prints the flags to add, one per line; status 2 with the reasons."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        flags = dataflow_flags(argv)
    except DataflowConfigError as e:
        print(f"run_pipeline.sh dataflow: {e}\n(see docs/dataflow.md)", file=sys.stderr)
        return 2
    for flag in flags:
        print(flag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
