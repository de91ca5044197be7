#!/usr/bin/env bash
# A real Flink standalone cluster on 127.0.0.1 for Beam's FlinkRunner, and a Python SDK worker pool.
#
#   scripts/flink_local.sh fetch               Flink 1.19.3 from PyPI (pip download, unpacked into
#                                             build/flink-1.19.3) + Beam's Flink job-server jar built with Maven
#                                             from flink/job-server/pom.xml (build/job-server, cached in ~/.m2)
#   scripts/flink_local.sh start [--taskmanagers N] [--slots S]
#                                             a JobManager + N TaskManagers (default 1 x 2 slots), config under
#                                             build/flink-run/conf; waits until REST answers with all slots
#   scripts/flink_local.sh stop                stops them (and nothing else: by their pid files)
#   scripts/flink_local.sh status              the REST overview, or "not running"
#   scripts/flink_local.sh worker-pool start|stop    Beam's EXTERNAL worker pool (python SDK workers) on
#                                                    127.0.0.1:$FLINK_WORKER_POOL_PORT
#   scripts/flink_local.sh jar                 prints the job-server jar's path (after fetch)
#   scripts/flink_local.sh env                 prints the settings below as shell assignments
#   scripts/flink_local.sh versions            the Beam versions of the job server and of the Python SDK (why two:
#                                             below, at TESTED_SDK_BEAM)
#
# Settings (environment): FLINK_REST_PORT (8081), FLINK_RPC_PORT (6123), FLINK_WORKER_POOL_PORT (50000),
# ELMO_BUILD_DIR (<repo>/build), ELMO_PYTHON (the venv's python, else python3), PIP_CACHE_DIR (pip's default),
# ELMO_JOB_SERVER_CACHE (~/.m2/repository/elmo-beam/beam-flink-job-server). Every command is idempotent.
# Needs: Java 11+ (java), Maven 3 (mvn, only for fetch), Python with pip. See docs/flink.md.
set -euo pipefail

FLINK_VERSION=1.19.3
FLINK_MINOR=1.19
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${ELMO_BUILD_DIR:-$repo/build}"
flink_home="$build/flink-$FLINK_VERSION"
run_dir="$build/flink-run"
downloads="$build/downloads"
pom="$repo/flink/job-server/pom.xml"
rest_port="${FLINK_REST_PORT:-8081}"
rpc_port="${FLINK_RPC_PORT:-6123}"
pool_port="${FLINK_WORKER_POOL_PORT:-50000}"
if [ -n "${ELMO_PYTHON:-}" ]; then
  python="$ELMO_PYTHON"
elif [ -x "$repo/.venv/bin/python" ]; then
  python="$repo/.venv/bin/python"
else
  python="python3"
fi

die() { echo "flink_local.sh: $*" >&2; exit 1; }
say() { echo "flink_local.sh: $*" >&2; }

# Two Beam versions, on purpose: the job server's (the pom: what the jar is built from) and the Python SDK's
# (setup.py's apache-beam pin). The job server stays at 2.62.0, the newest Beam whose Flink runner this project's
# Maven mirror serves; the SDK is newer (fixes and features it needs, docs/flink.md "Versions"). Beam does not
# promise that an SDK and a job server of different versions work together; this pairing is the one
# tests/test_flink_cluster.py runs on a real cluster in every CI run. Another pairing gets a warning, not a refusal.
TESTED_JOB_SERVER_BEAM=2.62.0
TESTED_SDK_BEAM=2.77.0
beam_version() {
  sed -n 's:.*<beam.version>\(.*\)</beam.version>.*:\1:p' "$pom" | head -1
}
sdk_version() {
  sed -n 's/.*"apache-beam\(\[[^]]*\]\)\{0,1\}==\([0-9.]*\)".*/\2/p' "$repo/setup.py" | head -1
}
check_versions() {
  local pom_version pinned
  pom_version="$(beam_version)"
  pinned="$(sdk_version)"
  [ -n "$pom_version" ] || die "no <beam.version> in $pom"
  if [ "$pom_version" = "$TESTED_JOB_SERVER_BEAM" ] && [ "$pinned" = "$TESTED_SDK_BEAM" ]; then
    say "Beam: Flink job server $pom_version ($pom), Python SDK $pinned (setup.py): the pairing the Flink cluster test runs"
  elif [ "$pom_version" = "$pinned" ]; then
    say "Beam: Flink job server and Python SDK both $pinned"
  else
    say "warning: Beam Flink job server $pom_version with Python SDK $pinned is not the tested pairing" \
      "(job server $TESTED_JOB_SERVER_BEAM + SDK $TESTED_SDK_BEAM); run tests/test_flink_cluster.py (docs/flink.md)"
  fi
}
jar_name() { echo "beam-runners-flink-$FLINK_MINOR-job-server-$(beam_version).jar"; }
jar_path() { echo "$build/job-server/$(jar_name)"; }

need_java() {
  command -v java >/dev/null 2>&1 || die "java not found: Flink and Beam's job server need a JDK 11 or 17 on PATH (e.g. apt-get install openjdk-17-jdk-headless)"
}
need_maven() {
  command -v mvn >/dev/null 2>&1 || die "mvn not found: building Beam's Flink job-server jar needs Maven 3 (e.g. apt-get install maven)"
}

# ---------------------------------------------------------------------------------------------------- fetch
fetch_flink() {
  if [ -f "$flink_home/.complete" ]; then
    return 0
  fi
  mkdir -p "$downloads"
  say "downloading apache-flink==$FLINK_VERSION and apache-flink-libraries==$FLINK_VERSION from PyPI (pip cache: ${PIP_CACHE_DIR:-default})"
  # The wheel carries bin/ and conf/, the sdist (230 MB) carries lib/, opt/ and plugins/. Neither is installed.
  "$python" -m pip download -q --no-deps --only-binary=:all: -d "$downloads" "apache-flink==$FLINK_VERSION" \
    || die "pip download apache-flink==$FLINK_VERSION failed"
  "$python" -m pip download -q --no-deps --no-build-isolation --no-binary=:all: -d "$downloads" \
    "apache-flink-libraries==$FLINK_VERSION" || die "pip download apache-flink-libraries==$FLINK_VERSION failed"
  local wheel sdist tmp
  wheel="$(ls "$downloads"/apache_flink-"$FLINK_VERSION"-*.whl | head -1)"
  sdist="$downloads/apache-flink-libraries-$FLINK_VERSION.tar.gz"
  [ -f "$wheel" ] && [ -f "$sdist" ] || die "the Flink archives are not in $downloads"
  say "unpacking into $flink_home"
  rm -rf "$flink_home" "$flink_home.tmp"
  tmp="$flink_home.tmp"
  mkdir -p "$tmp"
  "$python" - "$wheel" "$tmp" <<'EOF'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    z.extractall(dest, [n for n in z.namelist() if n.startswith(("pyflink/bin/", "pyflink/conf/"))])
EOF
  mv "$tmp/pyflink/bin" "$tmp/bin"
  mv "$tmp/pyflink/conf" "$tmp/conf"
  rmdir "$tmp/pyflink"
  tar -xzf "$sdist" -C "$tmp" --strip-components=2 "apache-flink-libraries-$FLINK_VERSION/deps"
  chmod +x "$tmp"/bin/*
  mkdir -p "$tmp/log"
  ls "$tmp"/lib/flink-dist-*.jar >/dev/null 2>&1 || die "no lib/flink-dist-*.jar after unpacking"
  [ -x "$tmp/bin/jobmanager.sh" ] && [ -x "$tmp/bin/taskmanager.sh" ] || die "no bin/jobmanager.sh after unpacking"
  touch "$tmp/.complete"
  mv "$tmp" "$flink_home"
}

fetch_job_server() {
  local jar cache key
  jar="$(jar_path)"
  key="$(sha256sum "$pom" | cut -c1-16)"
  cache="${ELMO_JOB_SERVER_CACHE:-$HOME/.m2/repository/elmo-beam/beam-flink-job-server}/$key"
  if [ -f "$jar" ] && [ -f "$jar.pom-$key" ]; then
    return 0
  fi
  mkdir -p "$build/job-server"
  if [ -f "$cache/$(jar_name)" ]; then
    say "job-server jar from the cache $cache"
    cp "$cache/$(jar_name)" "$jar.tmp"
  else
    need_maven
    say "building $(jar_name) with Maven from $pom (dependencies from Maven Central, cached in ~/.m2)"
    if ! mvn -B -Dstyle.color=never -f "$pom" package -Djob.server.build.dir="$build/job-server/maven" \
      >"$build/job-server/maven.log" 2>&1; then
      tail -n 40 "$build/job-server/maven.log" >&2
      die "mvn package of $pom failed, log in $build/job-server/maven.log (does your Maven repository serve org.apache.beam:beam-runners-flink-$FLINK_MINOR:$(beam_version) and its dependencies?)"
    fi
    mv "$build/job-server/maven/$(jar_name)" "$jar.tmp"
    rm -rf "$build/job-server/maven"
    mkdir -p "$cache"
    cp "$jar.tmp" "$cache/$(jar_name).tmp" && mv "$cache/$(jar_name).tmp" "$cache/$(jar_name)"
  fi
  rm -f "$jar".pom-*
  mv "$jar.tmp" "$jar"
  touch "$jar.pom-$key"
}

cmd_fetch() {
  check_versions
  need_java
  fetch_flink
  fetch_job_server
  say "ready: $flink_home and $(jar_path)"
}

# ---------------------------------------------------------------------------------------------------- cluster
rest_get() {  # rest_get PATH: prints the JSON, fails if the REST endpoint does not answer
  "$python" - "http://127.0.0.1:$rest_port$1" <<'EOF'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
    sys.stdout.write(r.read().decode())
EOF
}

port_in_use() {
  "$python" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

write_config() {
  local taskmanagers="$1" slots="$2" conf="$run_dir/conf"
  mkdir -p "$conf" "$run_dir/log" "$run_dir/pids" "$run_dir/tmp"
  cp "$flink_home"/conf/log4j*.properties "$flink_home"/conf/logback*.xml "$conf/"
  local java_opts
  java_opts="$(sed -n 's/^ *all: *\(--add-.*\)$/\1/p' "$flink_home/conf/config.yaml" | head -1)"
  cat >"$conf/config.yaml" <<EOF
# Written by scripts/flink_local.sh start: a small standalone cluster on 127.0.0.1 only.
env.java.opts.all: $java_opts
env.log.dir: $run_dir/log
env.pid.dir: $run_dir/pids
io.tmp.dirs: $run_dir/tmp
jobmanager.rpc.address: 127.0.0.1
jobmanager.rpc.port: $rpc_port
jobmanager.bind-host: 127.0.0.1
jobmanager.memory.process.size: 1024m
jobmanager.execution.failover-strategy: region
taskmanager.host: 127.0.0.1
taskmanager.bind-host: 127.0.0.1
taskmanager.numberOfTaskSlots: $slots
# Per TaskManager, whatever the input size (docs/flink.md "What a cluster needs"): 2.25 GB in all.
taskmanager.memory.process.size: 2304m
# Beam's batch translation deploys every stage of the job at once (~50 tasks per slot for this pipeline), each
# with its own network channels: Flink's default network memory (~110 MB of 32 KB buffers) is too little
taskmanager.memory.network.min: 384mb
taskmanager.memory.network.max: 384mb
taskmanager.memory.segment-size: 16kb
# The gRPC streams to the Python SDK workers use direct memory outside Flink's network buffers: up to 64
# messages of --experiments=data_buffer_size_limit (the job sets 256 KB) per running stage and slot, plus
# Flink's own netty; 128 MB of framework off-heap alone ran out at 400k tokens with Beam's 1 MB default.
taskmanager.memory.task.off-heap.size: 128m
taskmanager.memory.managed.fraction: 0.2
parallelism.default: $slots
rest.address: 127.0.0.1
rest.bind-address: 127.0.0.1
rest.port: $rest_port
blob.server.port: 0
restart-strategy.type: none
EOF
  echo "$taskmanagers" >"$run_dir/taskmanagers"
  echo "$slots" >"$run_dir/slots"
}

flink_env() {
  export FLINK_CONF_DIR="$run_dir/conf" FLINK_LOG_DIR="$run_dir/log" FLINK_PID_DIR="$run_dir/pids"
  unset FLINK_HOME HADOOP_CLASSPATH
}

cluster_pids() { cat "$run_dir"/pids/*.pid 2>/dev/null || true; }

cmd_start() {
  local taskmanagers=1 slots=2
  while [ $# -gt 0 ]; do
    case "$1" in
      --taskmanagers) taskmanagers="$2"; shift 2 ;;
      --taskmanagers=*) taskmanagers="${1#*=}"; shift ;;
      --slots) slots="$2"; shift 2 ;;
      --slots=*) slots="${1#*=}"; shift ;;
      *) die "start: unknown argument $1 (expected --taskmanagers N --slots S)" ;;
    esac
  done
  need_java
  [ -f "$flink_home/.complete" ] || die "no Flink distribution in $flink_home: run scripts/flink_local.sh fetch first"
  local want=$((taskmanagers * slots))
  if [ -n "$(cluster_pids)" ] && rest_get /overview >/dev/null 2>&1; then
    say "already running (REST http://127.0.0.1:$rest_port)"
    wait_ready "$taskmanagers" "$want" 5
    return 0
  fi
  port_in_use "$rest_port" && die "127.0.0.1:$rest_port is in use by another process; set FLINK_REST_PORT"
  port_in_use "$rpc_port" && die "127.0.0.1:$rpc_port is in use by another process; set FLINK_RPC_PORT"
  cmd_stop >/dev/null 2>&1 || true
  write_config "$taskmanagers" "$slots"
  flink_env
  say "starting a JobManager and $taskmanagers TaskManager(s) x $slots slots (logs: $run_dir/log)"
  "$flink_home/bin/jobmanager.sh" start >/dev/null
  local i
  for ((i = 0; i < taskmanagers; i++)); do
    "$flink_home/bin/taskmanager.sh" start >/dev/null
  done
  wait_ready "$taskmanagers" "$want" 120
  say "running: REST http://127.0.0.1:$rest_port ($taskmanagers TaskManager(s), $want slots)"
}

wait_ready() {  # wait_ready TASKMANAGERS SLOTS SECONDS
  local deadline=$((SECONDS + $3)) overview=""
  while [ $SECONDS -lt $deadline ]; do
    if overview="$(rest_get /overview 2>/dev/null)"; then
      if "$python" -c 'import json,sys; o=json.loads(sys.argv[1]); sys.exit(not (o["taskmanagers"] >= int(sys.argv[2]) and o["slots-total"] >= int(sys.argv[3])))' \
        "$overview" "$1" "$2"; then
        return 0
      fi
    fi
    sleep 1
  done
  echo "--- last lines of the Flink logs ($run_dir/log):" >&2
  tail -n 30 "$run_dir"/log/*.log >&2 2>/dev/null || true
  die "the cluster did not report $1 TaskManager(s) with $2 slots within $3 s (overview: ${overview:-no answer})"
}

cmd_stop() {
  if [ -f "$flink_home/.complete" ] && [ -d "$run_dir/conf" ]; then
    flink_env
    "$flink_home/bin/taskmanager.sh" stop-all >/dev/null 2>&1 || true
    "$flink_home/bin/jobmanager.sh" stop-all >/dev/null 2>&1 || true
  fi
  # whatever the scripts left: only the pids they recorded, TERM then KILL
  local pid deadline=$((SECONDS + 20))
  for pid in $(cluster_pids); do
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      say "pid $pid still running, killing it"
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$run_dir"/pids/*.pid
  say "cluster stopped"
}

cmd_status() {
  if rest_get /overview 2>/dev/null; then
    echo
  else
    echo "not running (no answer on http://127.0.0.1:$rest_port)"
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------------- worker pool
pool_pidfile="$run_dir/worker-pool.pid"

cmd_worker_pool() {
  case "${1:-}" in
    start)
      mkdir -p "$run_dir/log"
      if [ -f "$pool_pidfile" ] && kill -0 "$(cat "$pool_pidfile")" 2>/dev/null; then
        if [ "$(cat "$pool_pidfile.port" 2>/dev/null)" = "$pool_port" ]; then
          say "worker pool already running (pid $(cat "$pool_pidfile"), port $pool_port)"
          return 0
        fi
        cmd_worker_pool stop
      fi
      port_in_use "$pool_port" && die "127.0.0.1:$pool_port is in use by another process; set FLINK_WORKER_POOL_PORT"
      local bindir
      bindir="$(dirname "$("$python" -c 'import sys; print(sys.executable)')")"
      # Our pool (pipeline/worker_pool.py), not Beam's worker_pool_main: several TaskManagers share it and ask for
      # workers with equal ids, which Beam's pool confuses (it kills one TaskManager's worker when another releases
      # its own: issue 12). Workers run with this venv's python. One torch thread per worker is the job's own
      # default (--torch_threads); NO_GCE_CHECK: no metadata probe.
      PATH="$bindir:$PATH" NO_GCE_CHECK="${NO_GCE_CHECK:-true}" nohup setsid "$bindir/python" \
        -m pipeline.worker_pool --service_port="$pool_port" --bind=127.0.0.1 \
        >"$run_dir/log/worker-pool.log" 2>&1 </dev/null &
      echo $! >"$pool_pidfile"
      echo "$pool_port" >"$pool_pidfile.port"
      local deadline=$((SECONDS + 60))
      until port_in_use "$pool_port"; do
        kill -0 "$(cat "$pool_pidfile")" 2>/dev/null || { tail -n 20 "$run_dir/log/worker-pool.log" >&2; die "the worker pool exited"; }
        [ $SECONDS -lt $deadline ] || die "the worker pool did not listen on 127.0.0.1:$pool_port within 60 s"
        sleep 0.5
      done
      say "worker pool on 127.0.0.1:$pool_port (pid $(cat "$pool_pidfile"); use --environment_type=EXTERNAL --environment_config=127.0.0.1:$pool_port)"
      ;;
    stop)
      if [ -f "$pool_pidfile" ]; then
        local pid
        pid="$(cat "$pool_pidfile")"
        # setsid made the pool a process group leader: its SDK workers go with it
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 10))
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        rm -f "$pool_pidfile" "$pool_pidfile.port"
      fi
      say "worker pool stopped"
      ;;
    *) die "worker-pool start|stop" ;;
  esac
}

case "${1:-}" in
  fetch) shift; cmd_fetch "$@" ;;
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  worker-pool) shift; cmd_worker_pool "$@" ;;
  jar) jar_path ;;
  versions)
    echo "FLINK_JOB_SERVER_BEAM=$(beam_version)"
    echo "PYTHON_SDK_BEAM=$(sdk_version)"
    echo "TESTED_PAIRING=$TESTED_JOB_SERVER_BEAM+$TESTED_SDK_BEAM"
    ;;
  env)
    echo "FLINK_HOME_DIR=$flink_home"
    echo "FLINK_JOB_SERVER_JAR=$(jar_path)"
    echo "FLINK_MASTER=127.0.0.1:$rest_port"
    echo "FLINK_WORKER_POOL=127.0.0.1:$pool_port"
    echo "FLINK_LOG_DIR=$run_dir/log"
    ;;
  *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
