# shellcheck shell=bash
# Sourced by run_pipeline.sh for `./run_pipeline.sh dataflow ARGS...`: checks ARGS and appends the Dataflow flags
# to the array runner_flags (the venv is active). The checks and defaults are pipeline/dataflow.py's
# dataflow_flags, the same code the Flex Template launcher runs; see docs/dataflow.md. Required in ARGS:
#   --project=P --region=R --temp_location=gs://B/tmp     where the job runs and keeps its temporary files
#   --input=gs://B/text/*  --output=gs://B/emb             the workers read and write Cloud Storage
#   --model=gs://B/models/elmo-en-small                    the workers cannot read this checkout's models/
# Added unless given: --runner=DataflowRunner, --setup_file=<repo>/setup.py (ships this checkout's code),
# --sdk_container_image=$ELMO_DATAFLOW_IMAGE when set. With --gpu_type=nvidia-l4 [--gpu_count=1]
# [--gpu_sharing=shared_model|mps|single_process]: --dataflow_service_options=worker_accelerator=type:nvidia-l4;
# count:1;install-nvidia-driver[;use_nvidia_mps], --device=cuda (fail fast without a GPU), a machine type that
# takes the GPU (g2-standard-8 for L4), and --large_model or --experiments=no_use_multiple_sdk_containers; a GPU
# job needs the CUDA worker image (dataflow/Dockerfile) as --sdk_container_image or $ELMO_DATAFLOW_IMAGE.
# Nothing is contacted here; Beam submits the job (it needs gcloud credentials: gcloud auth application-default login).
if ! _dataflow_out="$(PYTHONWARNINGS=ignore::FutureWarning python -m pipeline.dataflow "$@")"; then
  exit 2  # pipeline.dataflow printed every problem
fi
if [ -n "$_dataflow_out" ]; then
  mapfile -t _dataflow_flags <<<"$_dataflow_out"
  runner_flags+=("${_dataflow_flags[@]}")
fi
echo "run_pipeline.sh dataflow: adding ${runner_flags[*]:-nothing}" >&2
unset _dataflow_out _dataflow_flags
