"""Beam's EXTERNAL worker pool for the Python SDK workers, safe to share between several Flink TaskManagers.

    python -m pipeline.worker_pool --service_port=50000      # what scripts/flink_local.sh worker-pool start runs

Why not Beam's own ``apache_beam.runners.worker.worker_pool_main`` (issue 12): every TaskManager numbers its SDK
workers itself (``1-1``, ``2-1``, ...: one counter per TaskManager JVM), so two TaskManagers that use one pool ask
for workers with the same ids. Beam's pool keeps one process per id: the second start overwrites the first, and
when one TaskManager releases its worker the pool kills the *other* TaskManager's worker, in the middle of a stage
(the stage fails with ``CANCELLED: client cancelled`` / ``Multiplexer hanging up``, or waits forever for a worker
that is gone). This pool keeps every process it starts; ``StopWorker`` kills a worker only when its id is
unambiguous, and otherwise leaves it to exit by itself, which an SDK worker does as soon as its TaskManager closes
its control channel (that is what a stop does on the runner's side anyway). Exited workers are reaped.

Also: workers are started with this interpreter (``sys.executable``), not a bare ``python`` from PATH, and their
output goes to the pool's own log instead of a pipe nobody reads.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import subprocess
import sys
import threading
import time

import grpc
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc
from apache_beam.utils import thread_pool_executor

_LOG = logging.getLogger("pipeline.worker_pool")
# Python's data plane sends a stage's outputs to the runner in messages of up to 10 MB and the Java runner queues
# up to 100 of them per running stage on its heap: up to 1 GB per slot, which ran a 2.25 GB TaskManager out of
# heap at 1.6M tokens (a gRPC thread died with OutOfMemoryError and the stage then waited forever). Workers of
# this pool flush at SDK_DATA_MESSAGE_BYTES instead: at most 100 MB per running stage.
SDK_DATA_MESSAGE_BYTES = 1 << 20
# The Java runner (job server 2.62) takes a bundle's outputs off its queue only after the SDK worker has reported
# the bundle finished, and on Flink's batch runner a bundle is a whole partition. The SDK worker's own send queues
# hold 2 x 100 MB by default: once a partition's outputs (and those of the other bundles sharing the worker's data
# stream) overflow them, the bundle cannot finish, its outputs are never taken, and the job waits for ever (the
# 1.6M-token job: SDK threads blocked in _enqueue_to_send, TaskManager task threads in ActiveBundle.close, no CPU).
# Workers of this pool let the send queues grow to SDK_SEND_QUEUE_BYTES instead: the worker holds its running
# bundles' outputs until the runner reads them (memory grows with the partition size, docs/flink.md).
SDK_SEND_QUEUE_BYTES = 16 << 30
_BOUND_MESSAGES = (
    "import apache_beam.runners.worker.data_plane as dp; "
    "dp._DEFAULT_SIZE_FLUSH_THRESHOLD = {limit}; "
    "dp._DEFAULT_SEND_QUEUE_MAX_BYTES = {send_queue}; dp._DEFAULT_SEND_QUEUE_MAX_ELEMENTS = {send_queue} >> 20; "
    "dp.SizeBasedBufferingClosableOutputStream.__init__.__defaults__ = "
    "(None, None, {limit}) + dp.SizeBasedBufferingClosableOutputStream.__init__.__defaults__[3:]; "
    "dp.TimeBasedBufferingClosableOutputStream.__init__.__defaults__ = "
    "(None, None, {limit}) + dp.TimeBasedBufferingClosableOutputStream.__init__.__defaults__[3:]; "
)
_HARNESS = (
    _BOUND_MESSAGES + "from apache_beam.runners.worker.sdk_worker import SdkHarness; "
    "SdkHarness({url!r}, worker_id={worker_id!r}, state_cache_size={cache}, "
    "data_buffer_time_limit_ms={buffer_ms}).run()"
)


def _kill(proc: subprocess.Popen, timeout: float = 10) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class SharedWorkerPool(beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolServicer):
    """Starts one SDK worker process per ``StartWorker``; tolerates equal worker ids from different runners."""

    def __init__(self, state_cache_size: int = 0, data_buffer_time_limit_ms: int = -1):
        self._cache = state_cache_size
        self._buffer_ms = data_buffer_time_limit_ms
        self._lock = threading.Lock()
        self._workers: dict[str, list[subprocess.Popen]] = {}

    def _reap(self) -> None:
        for worker_id in list(self._workers):
            live = [p for p in self._workers[worker_id] if p.poll() is None]
            if live:
                self._workers[worker_id] = live
            else:
                del self._workers[worker_id]

    def StartWorker(self, request, context):  # noqa: N802 (gRPC method name)
        command = [
            sys.executable,
            "-c",
            _HARNESS.format(
                url=request.control_endpoint.url,
                worker_id=request.worker_id,
                cache=self._cache,
                buffer_ms=self._buffer_ms,
                limit=SDK_DATA_MESSAGE_BYTES,
                send_queue=SDK_SEND_QUEUE_BYTES,
            ),
        ]
        try:
            proc = subprocess.Popen(command, close_fds=True)
        except OSError as exc:
            return beam_fn_api_pb2.StartWorkerResponse(error=f"cannot start an SDK worker: {exc}")
        with self._lock:
            self._reap()
            same = self._workers.setdefault(request.worker_id, [])
            same.append(proc)
            shared = len(same)
        _LOG.info(
            "started worker %s (pid %d, control %s)%s",
            request.worker_id,
            proc.pid,
            request.control_endpoint.url,
            f"; {shared} live workers share this id" if shared > 1 else "",
        )
        return beam_fn_api_pb2.StartWorkerResponse()

    def StopWorker(self, request, context):  # noqa: N802
        with self._lock:
            self._reap()
            live = self._workers.get(request.worker_id, [])
            target = live.pop() if len(live) == 1 else None
            if not live:
                self._workers.pop(request.worker_id, None)
        if target is not None:
            _LOG.info("stopping worker %s (pid %d)", request.worker_id, target.pid)
            threading.Thread(target=_kill, args=(target,), daemon=True).start()
        elif live:
            _LOG.info(
                "stop of worker %s: %d live workers share this id (several TaskManagers); each exits when its "
                "TaskManager closes its control channel",
                request.worker_id,
                len(live),
            )
        return beam_fn_api_pb2.StopWorkerResponse()

    def stop_all(self) -> None:
        with self._lock:
            procs = [p for same in self._workers.values() for p in same]
            self._workers.clear()
        for proc in procs:
            if proc.poll() is None:
                _kill(proc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service_port", type=int, required=True)
    parser.add_argument("--bind", default="[::]", help="address to listen on (default all)")
    parser.add_argument("--state_cache_size", type=int, default=0)
    parser.add_argument("--data_buffer_time_limit_ms", type=int, default=-1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pool = SharedWorkerPool(args.state_cache_size, args.data_buffer_time_limit_ms)
    options = [("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)]
    server = grpc.server(thread_pool_executor.shared_unbounded_instance(), options=options)
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    port = server.add_insecure_port(f"{args.bind}:{args.service_port}")
    server.start()
    atexit.register(pool.stop_all)
    _LOG.info("worker pool listening on port %d (python %s)", port, sys.executable)
    try:
        while True:
            time.sleep(3600)
            with pool._lock:
                pool._reap()
    except KeyboardInterrupt:
        server.stop(0)


if __name__ == "__main__":
    main()
