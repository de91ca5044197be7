# shellcheck shell=bash
# Sourced by run_pipeline.sh for `./run_pipeline.sh portable ARGS...`: checks ARGS and appends Beam's
# PortableRunner flags to the array runner_flags. It starts nothing: the job service and the SDK workers are
# yours. Any Beam job service works: Beam's Python one (python -m
# apache_beam.runners.portability.local_job_service_main --port 8099), or a runner's job server, e.g. the Flink
# one (java -jar build/job-server/beam-runners-flink-1.19-job-server-2.62.0.jar --flink-master=127.0.0.1:8081
# --job-port=8099; docs/flink.md). Required in ARGS:
#   --job_endpoint=HOST:PORT                  the job service
#   --environment_type=EXTERNAL|LOOPBACK|...  where the Python SDK workers run; EXTERNAL also needs
#   --environment_config=HOST:PORT            a worker pool (scripts/flink_local.sh worker-pool start)
# Added unless given: --runner=PortableRunner.
has_flag job_endpoint "$@" \
  || runner_fail portable "--job_endpoint=HOST:PORT is required (a running Beam job service, e.g. python -m apache_beam.runners.portability.local_job_service_main --port 8099, then --job_endpoint=127.0.0.1:8099; see docs/flink.md)"
require_sdk_environment portable "$@"
add_runner_unless_given PortableRunner "$@"
