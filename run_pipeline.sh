#!/usr/bin/env bash
# Runs the ELMo embedding job. Creates ./.venv on first use (like run_tests.sh), then:
#   ./run_pipeline.sh                       embeds the sample text in sample_data/ with the built-in model,
#                                           on the local runner, into ./output/<run_id>/
#   ./run_pipeline.sh [local] --input GLOB --output PREFIX [--model DIR] [any pipeline or Beam flag]
#   ./run_pipeline.sh flink --flink_master HOST:PORT ...      a running Flink cluster (scripts/runner_flink.sh)
#   ./run_pipeline.sh portable --job_endpoint HOST:PORT ...   any Beam job service (scripts/runner_portable.sh)
#   ./run_pipeline.sh dataflow --project P --region R ...     Google Cloud Dataflow (scripts/runner_dataflow.sh)
# Relative paths are taken from the directory you run it in. Without a runner word the local FnApiRunner is used
# (it never touches the network); e.g. add --direct_num_workers=2 --direct_running_mode=multi_processing.
# No runner word starts a cluster or a service by surprise: the README shows how to start a local Flink cluster.
set -euo pipefail
here="$(pwd)"
repo="$(cd "$(dirname "$0")" && pwd)"
cd "$repo"
source ./scripts/ensure_venv.sh
source ./scripts/runner_common.sh  # has_flag and the runner scripts' checks
cd "$here"

mode="local"
case "${1:-}" in
  local | flink | portable | dataflow) mode="$1"; shift ;;
esac

defaults=()
runner_flags=()  # filled by the runner's script from its required flags
if [ "$mode" != "local" ]; then
  # shellcheck disable=SC1090
  source "$repo/scripts/runner_$mode.sh" "$@"
fi
has_flag input "$@" || [ "$mode" = "dataflow" ] || defaults+=("--input=$repo/sample_data/sotu/*")
has_flag output "$@" || [ "$mode" = "dataflow" ] || defaults+=("--output=output")
export NO_GCE_CHECK="${NO_GCE_CHECK:-true}"  # no metadata-server probe off Google Cloud
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::FutureWarning}"  # google-cloud libraries warn on import
exec python -m pipeline.run "${defaults[@]}" "${runner_flags[@]}" "$@"
