#!/usr/bin/env bash
# The nightly run for cron (docs/scheduling.md):
#   scripts/nightly.sh [local|flink|portable|dataflow] --output PREFIX --input GLOB [more job flags]
# runs run_pipeline.sh with the same arguments plus --run_date=<today, date +%F> and --previous_run=latest (unless
# given), under an exclusive lock per --output on this machine (flock -n: a second run of the same output exits
# 75 at once instead of waiting or overlapping). The job's output is appended to a log; the exit status is the
# job's (2: configuration error), and on failure a short note and the log's tail go to stderr, so cron mails
# failures (and the busy lock) and nothing else.
# Environment (all optional):
#   ELMO_RUN_DATE      the date instead of today (YYYY-MM-DD)
#   ELMO_LOCK_FILE     the lock file (default ${XDG_RUNTIME_DIR:-/tmp}/elmo-nightly-<output>.lock)
#   ELMO_LOG           the log file (default <repo>/output/logs/nightly-<output>.log); "-" logs to stdout
#   ELMO_NIGHTLY_COMMAND  the command run instead of <repo>/run_pipeline.sh (tests)
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
command="${ELMO_NIGHTLY_COMMAND:-$repo/run_pipeline.sh}"
me="nightly.sh"

has_flag() {  # has_flag NAME ARGS...: --NAME or --NAME=... among ARGS
  local name="$1" arg
  shift
  for arg in "$@"; do
    case "$arg" in "--$name" | "--$name="*) return 0 ;; esac
  done
  return 1
}

output=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --output=*) output="${args[i]#--output=}" ;;
    --output) output="${args[i + 1]:-}" ;;
  esac
done
if [ -z "$output" ]; then
  echo "$me: --output PREFIX is required (the lock is per output)" >&2
  exit 2
fi
case "$output" in
  *://*) key="$output" ;;
  *) key="$(realpath -m -- "$output")" ;;  # out, ./out and /abs/out are one output
esac
slug="$(printf '%s' "$key" | tr -c 'A-Za-z0-9._-' '_' | cut -c1-80)-$(printf '%s' "$key" | sha256sum | cut -c1-8)"
lock="${ELMO_LOCK_FILE:-${XDG_RUNTIME_DIR:-/tmp}/elmo-nightly-$slug.lock}"
log="${ELMO_LOG:-$repo/output/logs/nightly-$slug.log}"

extra=()
if ! has_flag run_date "$@"; then
  run_date="${ELMO_RUN_DATE:-$(date +%F)}"
  extra+=("--run_date=$run_date")
fi
has_flag previous_run "$@" || extra+=("--previous_run=latest")

exec 9>>"$lock" || { echo "$me: cannot open the lock file $lock" >&2; exit 2; }
if ! flock -n 9; then
  echo "$me: another run of --output=$output holds $lock (pid $(cat "$lock" 2>/dev/null || echo '?')); not starting" >&2
  exit 75
fi
# The lock is the open file description, inherited by the job: it is released when the job and this script exit.
echo "$$" >"$lock"

if [ "$log" != "-" ]; then
  mkdir -p "$(dirname "$log")"
  exec 3>&2 >>"$log" 2>&1  # fd 3 keeps the caller's stderr (cron's mail) for the failure note
else
  exec 3>&2
fi
start=$(date +%s)
echo "=== $(date '+%F %T %z') $me start (pid $$): $command $* ${extra[*]}"
"$command" "$@" "${extra[@]}" </dev/null 3>&-
status=$?
echo "=== $(date '+%F %T %z') $me end: exit status $status after $(($(date +%s) - start)) s"
if [ "$status" -ne 0 ]; then
  {
    echo "$me: the nightly run of --output=$output ${extra[*]} failed with exit status $status"
    if [ "$log" != "-" ]; then
      echo "--- last lines of $log:"
      tail -n 30 "$log"
    fi
  } >&3
fi
exit "$status"
