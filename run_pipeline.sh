#!/usr/bin/env bash
# Runs the ELMo embedding job. Creates ./.venv on first use (like run_tests.sh), then:
#   ./run_pipeline.sh                       embeds the sample text in sample_data/ with the built-in model,
#                                           on the local runner, into ./output/<run_id>/
#   ./run_pipeline.sh --input GLOB --output PREFIX [--model DIR] [any pipeline or Beam flag]
# Relative paths are taken from the directory you run it in. Without --runner the local FnApiRunner is used
# (it never touches the network); e.g. add --direct_num_workers=2 --direct_running_mode=multi_processing.
set -euo pipefail
here="$(pwd)"
repo="$(cd "$(dirname "$0")" && pwd)"
cd "$repo"
source ./scripts/ensure_venv.sh
cd "$here"

has_flag() {  # has_flag NAME ARGS...: whether --NAME or --NAME=... is among ARGS
  local name="$1"; shift
  for arg in "$@"; do
    case "$arg" in "--$name" | "--$name="*) return 0 ;; esac
  done
  return 1
}
defaults=()
has_flag input "$@" || defaults+=("--input=$repo/sample_data/sotu/*")
has_flag output "$@" || defaults+=("--output=output")
export NO_GCE_CHECK="${NO_GCE_CHECK:-true}"  # no metadata-server probe off Google Cloud
exec python -m pipeline.run "${defaults[@]}" "$@"
