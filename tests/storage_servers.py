"""Real storage servers for the object-store tests: a GCS emulator and an S3 server, each behind a fault proxy.

* GCS: PyPI ``gcp-storage-emulator`` (it serves the JSON API's batch endpoint that Beam's ``gs://`` filesystem
  uses for copies and deletes); clients find it through ``STORAGE_EMULATOR_HOST``.
* S3: moto's standalone server (``python -m moto.server``); clients find it through ``AWS_ENDPOINT_URL_S3`` and
  take credentials from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (the standard environment).

* GCS with preconditions: the gcp-storage-emulator ignores ``ifGenerationMatch``, so the run-folder ownership test
  on ``gs://`` uses ``fake-gcs-server`` (Go, built once from the Go module proxy into ``build/go/bin``), which
  honours it (but lacks the batch endpoint Beam deletes with, so the Beam-based tests stay on the emulator).

Both listen on free 127.0.0.1 ports; the clients talk to a ``FaultProxy`` in front of each, which forwards bytes
and, when asked, fails every request for a while (answers ``503`` to new requests and drops open connections),
like a store that goes away for a few seconds. Environment variables reach Beam's worker processes too.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HOST = "127.0.0.1"
CONNECT_TIMEOUT_S = 10  # the proxy gives up on a server that does not accept (the emulator listens with a backlog of 5)
SERVICE_UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_REQUEST_LINE = re.compile(rb"^(GET|PUT|POST|HEAD|DELETE|PATCH) (\S+) HTTP/1\.[01]\r\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing answered on {HOST}:{port} within {timeout} s")


@dataclass
class FaultProxy:
    """A TCP proxy on a free port in front of ``target_port``; ``fail_for(seconds)`` or ``fail_when(pattern, ...)``
    make it fail every request for a while. ``failed`` counts the requests it failed."""

    target_port: int
    port: int = field(default_factory=free_port)
    failed: int = 0
    requests: int = 0
    _fail_until: float = 0.0
    _triggers: list = field(default_factory=list)
    events: list = field(default_factory=list)  # (seconds since start, what happened)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _open: set = field(default_factory=set)
    _stopped: bool = False

    @property
    def armed(self) -> int:
        """How many ``fail_when`` triggers are still waiting for their request."""
        with self._lock:
            return len(self._triggers)

    def refusals(self) -> int:
        """How many requests were answered 503 so far: during an outage, a client retrying."""
        return sum(what.startswith("503") for _, what in list(self.events))

    def _event(self, what: str) -> None:
        self.events.append((round(time.monotonic() - self._started, 2), what))

    def start(self) -> FaultProxy:
        self._started = time.monotonic()
        self._server = socket.create_server((HOST, self.port))
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped = True
        self._server.close()
        self._drop_open()

    @property
    def failing(self) -> bool:
        return time.monotonic() < self._fail_until

    def fail_for(self, seconds: float, drop_open: bool = True) -> None:
        """From now on, for ``seconds``: open connections are dropped and every request is answered 503.
        ``drop_open=False`` leaves open connections be (their next request gets the 503), as for a connection that
        the proxy accepted just as the outage began."""
        with self._lock:
            self._fail_until = time.monotonic() + seconds
        if drop_open:
            self._drop_open()

    def fail_when(self, pattern: str, seconds: float, action=None) -> None:
        """At the first request whose request line matches ``pattern`` (regex): drops it and starts
        ``fail_for(seconds)``, or, with ``action``, calls ``action()`` in a thread instead (e.g. kill the server)."""
        with self._lock:
            self._triggers.append((re.compile(pattern.encode()), seconds, action))

    def heal(self) -> None:
        with self._lock:
            self._fail_until = 0.0
            self._triggers = []

    def _drop_open(self) -> None:
        with self._lock:
            sockets, self._open = list(self._open), set()
        for s in sockets:
            _close(s)

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if self.failing:
            self._refuse(client)
            return
        try:
            upstream = socket.create_connection((HOST, self.target_port), timeout=CONNECT_TIMEOUT_S)
            upstream.settimeout(None)
        except OSError:  # the server is down (or not accepting): the client sees its connection dropped
            self._event("server down: connection dropped")
            with self._lock:
                self.failed += 1
            client.close()
            return
        with self._lock:
            self._open.update((client, upstream))
        threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
        self._pipe(client, upstream, True)

    def _refuse(self, client: socket.socket) -> None:
        try:
            client.settimeout(5)
            head = client.recv(65536)
            self._event(f"503 (new connection): {head.splitlines()[0][:100] if head else b''!r}")
            with self._lock:
                self.failed += 1
            client.sendall(SERVICE_UNAVAILABLE)
        except OSError:
            pass
        finally:
            client.close()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                if from_client:
                    match = _REQUEST_LINE.match(data)
                    if match:
                        with self._lock:
                            self.requests += 1
                        with self._lock:
                            fired = [t for t in self._triggers if t[0].search(match.group(0))]
                            self._triggers = [t for t in self._triggers if t not in fired]
                        if fired:  # this request and every open connection are dropped
                            self._event(f"outage starts, dropped: {match.group(0)[:100]!r}")
                            with self._lock:
                                self.failed += 1
                            _, seconds, action = fired[0]
                            if action is None:
                                self.fail_for(seconds)
                            else:
                                threading.Thread(target=action, daemon=True).start()
                            break
                        if self.failing:
                            self._event(f"503: {match.group(0)[:100]!r}")
                            with self._lock:
                                self.failed += 1
                            src.sendall(SERVICE_UNAVAILABLE)
                            break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)


def _close(s: socket.socket) -> None:
    """Shuts a socket down, then closes it. ``close()`` alone does not reach the peer while the other pipe thread
    is blocked in ``recv`` on it (Linux keeps the socket open until that call returns): the single-threaded GCS
    emulator then waits for ever for a request on that connection and serves no one else (a CI run lost every later
    gs:// test that way)."""
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


class StorageServer:
    """A server subprocess on a free port with a ``FaultProxy`` in front; ``url`` is what clients use."""

    def __init__(self, name: str, argv: list[str], workdir: Path):
        self.name = name
        self.port = free_port()
        self.argv = [a.format(port=self.port, host=HOST) for a in argv]
        self.workdir = workdir
        self.process: subprocess.Popen | None = None
        self.proxy: FaultProxy | None = None
        self.log = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.proxy.port}"

    def start(self) -> StorageServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.log is None:
            self.log = open(self.workdir / f"{self.name}.log", "ab")  # closed in stop()
        self.process = subprocess.Popen(self.argv, cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, process=self.process)
        if self.proxy is None:
            self.proxy = FaultProxy(self.port).start()
        return self

    def kill_and_restart(self, down_for: float) -> None:
        """SIGKILLs the server, waits ``down_for`` seconds, starts it again on the same port (same data dir)."""
        self.proxy._event("server killed")
        self.process.kill()
        self.process.wait()
        time.sleep(down_for)
        self.start()
        self.proxy._event("server restarted")
        self.restarts += 1

    def stop_server(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def stop(self) -> None:
        self.stop_server()
        if self.proxy is not None:
            self.proxy.stop()
        if self.log is not None:
            self.log.close()


EMULATOR_IDLE_TIMEOUT_S = 30
# gcp-storage-emulator serves one connection at a time (http.server.HTTPServer) and waits for a request without a
# time limit; the handler timeout makes a connection that never sends one cost it 30 s, not the rest of the run.
_GCS_EMULATOR_MAIN = (
    "import socketserver, sys; "
    f"socketserver.StreamRequestHandler.timeout = {EMULATOR_IDLE_TIMEOUT_S}; "
    "from gcp_storage_emulator.__main__ import main; sys.exit(main())"
)


def gcs_server(workdir: Path) -> StorageServer:
    """gcp-storage-emulator, keeping its objects on disk under ``workdir`` (it survives a restart)."""
    argv = [sys.executable, "-c", _GCS_EMULATOR_MAIN, "start", "--host={host}", "--port={port}", "-q"]
    return StorageServer("gcs", argv, workdir)


FAKE_GCS_MODULE = "github.com/fsouza/fake-gcs-server@v1.56.1"
GO_BIN = Path(__file__).resolve().parent.parent / "build" / "go" / "bin"


def fake_gcs_server_binary() -> Path:
    """The fake-gcs-server executable, built with ``go install`` on first use (~3 min cold, cached after)."""
    exe = GO_BIN / "fake-gcs-server"
    if not exe.exists():
        GO_BIN.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GOBIN": str(GO_BIN), "GOFLAGS": "-buildvcs=false"}
        subprocess.run(["go", "install", FAKE_GCS_MODULE], env=env, check=True, capture_output=True, timeout=900)
    return exe


def fake_gcs_server(workdir: Path) -> StorageServer:
    """fake-gcs-server in memory: GCS's JSON API with real ``ifGenerationMatch`` preconditions."""
    exe = str(fake_gcs_server_binary())
    argv = [exe, "-scheme", "http", "-host", "{host}", "-port", "{port}", "-backend", "memory"]
    return StorageServer("fake-gcs", [*argv, "-public-host", "{host}:{port}", "-log-level", "error"], workdir)


def s3_server(workdir: Path) -> StorageServer:
    """moto's standalone S3 server (state in memory)."""
    return StorageServer("s3", [sys.executable, "-m", "moto.server", "-H", "{host}", "-p", "{port}"], workdir)


def client_environment(gcs: StorageServer, s3: StorageServer) -> dict[str, str]:
    """The standard variables that point every client (Beam, google-cloud-storage, boto3, gcsfs, s3fs) at the
    test servers, with throwaway S3 credentials and no cloud metadata probes."""
    return {
        "STORAGE_EMULATOR_HOST": gcs.url,
        "NO_GCE_CHECK": "true",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "AWS_ENDPOINT_URL_S3": s3.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def create_buckets(gcs_bucket: str, s3_bucket: str) -> None:
    """Creates one bucket on each server (clients configured from the environment)."""
    import boto3
    from google.cloud import storage

    storage.Client.create_anonymous_client().create_bucket(gcs_bucket)
    boto3.client("s3").create_bucket(Bucket=s3_bucket)


def upload_tree(local: Path, url: str, names: list[str] | None = None) -> None:
    """Copies files of ``local`` (all, or ``names``) to the ``url`` prefix through fsspec."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    for path in sorted(local.iterdir()):
        if path.is_file() and (names is None or path.name in names):
            fs.put_file(str(path), f"{root.rstrip('/')}/{path.name}")
    fs.invalidate_cache()


def download_tree(url: str, local: Path) -> list[str]:
    """Copies every object under the ``url`` prefix into ``local``; returns their paths relative to ``url``."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    names = []
    for path in sorted(fs.find(root)):
        relative = path[len(root.rstrip("/")) + 1 :]
        target = local / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(path, str(target))
        names.append(relative)
    return names


def set_environment(env: dict[str, str]) -> dict[str, str | None]:
    """Sets ``env`` in os.environ; returns the previous values (for ``restore_environment``)."""
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    return previous


def clear_fsspec_clients() -> None:
    """Forgets fsspec's cached gcsfs/s3fs filesystems: they keep the endpoint of the environment they were made in,
    which another test module's (stopped) server may have set."""
    import gcsfs
    import s3fs

    gcsfs.GCSFileSystem.clear_instance_cache()
    s3fs.S3FileSystem.clear_instance_cache()


def restore_environment(previous: dict[str, str | None]) -> None:
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


GCS_BUCKET = "elmo-test-gs"
S3_BUCKET = "elmo-test-s3"


@pytest.fixture(scope="module")
def storage_servers(tmp_path_factory):
    """Starts both servers (with proxies), points the standard client variables at them, creates the buckets;
    yields ``{"gs": StorageServer, "s3": StorageServer}``; stops everything and restores the environment when the
    module's tests are done (module scope, so that other test modules never see these variables)."""
    root = tmp_path_factory.mktemp("storage-servers")
    servers = {"gs": gcs_server(root / "gcs"), "s3": s3_server(root / "s3")}
    previous = None
    try:
        for server in servers.values():
            server.start()
        env = client_environment(servers["gs"], servers["s3"])
        previous = set_environment({**env, "ELMO_MODEL_CACHE": str(root / "model-cache")})
        clear_fsspec_clients()
        from transforms.beam_fixes import skip_adc_for_gcs_emulator

        skip_adc_for_gcs_emulator()
        create_buckets(GCS_BUCKET, S3_BUCKET)
        yield servers
    finally:
        for server in servers.values():
            server.stop()
        if previous is not None:
            restore_environment(previous)
        clear_fsspec_clients()
