# shellcheck shell=bash
# Sourced by run_pipeline.sh for `./run_pipeline.sh flink ARGS...`: checks ARGS and appends Beam's FlinkRunner
# flags to the array runner_flags. It starts nothing: the cluster and the SDK workers are yours (a local one:
# scripts/flink_local.sh, docs/flink.md). Required in ARGS:
#   --flink_master=HOST:PORT                  the cluster's REST address, e.g. 127.0.0.1:8081
#   --environment_type=EXTERNAL|LOOPBACK|...  where the Python SDK workers run; EXTERNAL also needs
#   --environment_config=HOST:PORT            a worker pool (scripts/flink_local.sh worker-pool start)
# Added unless given: --runner=FlinkRunner, --flink_job_server_jar=build/job-server/<Beam's jar name> (built by
# scripts/flink_local.sh fetch; Maven Central serves no job-server jar for our Beam here), --parallelism=2.
_flink_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
has_flag flink_master "$@" \
  || runner_fail flink "--flink_master=HOST:PORT is required (the Flink REST address; a local cluster: scripts/flink_local.sh start, then --flink_master=127.0.0.1:8081; see docs/flink.md)"
require_sdk_environment flink "$@"
add_runner_unless_given FlinkRunner "$@"
if ! has_flag flink_job_server_jar "$@"; then
  _flink_jar="$("$_flink_repo/scripts/flink_local.sh" jar)"
  [ -f "$_flink_jar" ] || runner_fail flink "no job-server jar at $_flink_jar: run scripts/flink_local.sh fetch (or pass --flink_job_server_jar=PATH)"
  runner_flags+=("--flink_job_server_jar=$_flink_jar")
fi
has_flag parallelism "$@" || runner_flags+=("--parallelism=2")
unset _flink_repo _flink_jar
