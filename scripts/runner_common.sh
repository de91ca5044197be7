# shellcheck shell=bash
# Sourced by run_pipeline.sh (and the runner tests): the flag helpers its runner scripts share.

has_flag() {  # has_flag NAME ARGS...: whether --NAME or --NAME=... is among ARGS
  local name="$1"; shift
  for arg in "$@"; do
    case "$arg" in "--$name" | "--$name="*) return 0 ;; esac
  done
  return 1
}

runner_fail() {  # runner_fail MODE MESSAGE: the usage error of `run_pipeline.sh MODE`, exit status 2
  echo "run_pipeline.sh $1: $2" >&2
  exit 2
}

require_sdk_environment() {  # require_sdk_environment MODE ARGS...: where the Python SDK workers of a portable job run
  local mode="$1"; shift
  has_flag environment_type "$@" || runner_fail "$mode" "--environment_type is required: EXTERNAL with --environment_config=HOST:PORT of a Beam worker pool (scripts/flink_local.sh worker-pool start), or LOOPBACK (workers inside this process)"
  for arg in "$@"; do
    case "$arg" in
      --environment_type=EXTERNAL | --environment_type=external)
        has_flag environment_config "$@" || runner_fail "$mode" "--environment_type=EXTERNAL needs --environment_config=HOST:PORT (the worker pool's address)" ;;
    esac
  done
}

add_runner_unless_given() {  # add_runner_unless_given RUNNER ARGS...: --runner=RUNNER into runner_flags
  local runner="$1"; shift
  has_flag runner "$@" || runner_flags+=("--runner=$runner")
}
