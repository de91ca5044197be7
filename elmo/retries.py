"""Retry policy for storage: our own whole-step retries (``with_retries``) and the storage clients' retry defaults
(``configure_client_retries``, called explicitly by entry points; importing this module changes nothing).

No Beam imports here.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import TypeVar

_LOG = logging.getLogger(__name__)
T = TypeVar("T")

ATTEMPTS_ENV = "ELMO_STORAGE_ATTEMPTS"
RETRY_ATTEMPTS = 4  # our own retries on top of the clients' (which retry each request): 0.5 + 1 + 2 s of backoff
BUDGET_ENV = "ELMO_STORAGE_RETRY_BUDGET_S"
RETRY_BUDGET_S = 60.0
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 8.0
GCS_CONNECT_TIMEOUT_S = 30.0
GCS_READ_TIMEOUT_S = 120.0  # longest silence on a gs:// socket before gcsfs drops and retries the request
# The storage clients' retry settings, through their standard environment variables: botocore's ``standard`` retry
# mode with 10 attempts (503/500/throttling and dropped connections, exponential backoff with jitter) for Beam's
# and s3fs's S3 clients; gcsfs's old gRPC probe off. google-cloud-storage (Beam's ``gs://``) already retries
# 429/5xx and connection errors for 120 s by default.
CLIENT_RETRY_DEFAULTS = {
    "AWS_RETRY_MODE": "standard",
    "AWS_MAX_ATTEMPTS": "10",
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
}


def configure_client_retries() -> None:
    """Sets ``CLIENT_RETRY_DEFAULTS`` in ``os.environ`` where the user has not set them (never overriding).

    Called by every entry point (the commands' ``main``, the pipeline launcher, the worker pool) and by the
    ``transforms`` package, which every Beam worker process imports; environment variables reach the worker
    processes started from the calling one. Call it before the first storage client is made.
    """
    for name, value in CLIENT_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)
    _bound_gcsfs_requests()


def _bound_gcsfs_requests() -> None:
    """gcsfs waits forever for a stalled connection by default (``requests_timeout=None``): a server that stops
    answering mid-request hung a run. A socket that connects in no more than ``GCS_CONNECT_TIMEOUT_S`` and never
    sits silent for ``GCS_READ_TIMEOUT_S`` makes a stall an error that gcsfs retries (its retry covers aiohttp's
    client errors), without limiting how long a large download may take. Set as fsspec's default for ``gs``/``gcs``
    filesystems made afterwards, unless the user configured ``requests_timeout`` there."""
    try:
        import aiohttp
        import fsspec.config
    except ImportError:  # no gcsfs stack installed: nothing to bound
        return
    timeout = aiohttp.ClientTimeout(sock_connect=GCS_CONNECT_TIMEOUT_S, sock_read=GCS_READ_TIMEOUT_S)
    for protocol in ("gs", "gcs"):
        fsspec.config.conf.setdefault(protocol, {}).setdefault("requests_timeout", timeout)


class StorageError(OSError):
    """A storage operation failed for good (after retries); the message names the URL."""


def is_permanent(err: BaseException) -> bool:
    """Errors no retry can fix: missing objects, refused credentials, bad arguments."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError)):
        return True
    name = type(err).__name__
    if name in ("NotFound", "Forbidden", "Unauthorized", "NoSuchKey", "NoSuchBucket", "BadRequest"):
        return True
    status = getattr(err, "code", None) or getattr(err, "status", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)


_RETRIES = {"count": 0}  # retries done by ``with_retries`` in this process (tests read it)


def retries_done() -> int:
    """How many times ``with_retries`` retried in this process."""
    return _RETRIES["count"]


def with_retries(fn: Callable[[], T], what: str, attempts: int | None = None, budget_s: float | None = None) -> T:
    """Calls ``fn`` until it succeeds, retrying transient errors with exponential backoff and jitter.

    For our own storage steps that no client retries as a whole (a model fetch, ``manifest.json``, ``_SUCCESS``).
    A permanent error (not found, forbidden) is raised at once; after ``attempts`` a ``StorageError`` naming
    ``what`` (the URL) and the last error is raised. ``$ELMO_STORAGE_ATTEMPTS`` overrides the default of 4.
    No new attempt starts once ``budget_s`` (``$ELMO_STORAGE_RETRY_BUDGET_S``, default 60 s) have passed since the
    first: when a client has already retried one call for minutes, repeating it all would only multiply the wait
    before a persistent outage is reported.
    """
    attempts = attempts or int(os.environ.get(ATTEMPTS_ENV, RETRY_ATTEMPTS))
    budget_s = budget_s if budget_s is not None else float(os.environ.get(BUDGET_ENV, RETRY_BUDGET_S))
    started = time.monotonic()
    delay = RETRY_INITIAL_S
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as err:  # classified below
            if is_permanent(err):
                raise
            elapsed = time.monotonic() - started
            if attempt == attempts or elapsed + delay > budget_s:
                raise StorageError(
                    f"{what}: still failing after {attempt} attempts over {elapsed:.0f} s: {type(err).__name__}: {err}"
                ) from err
            _RETRIES["count"] += 1
            _LOG.warning(
                "%s: %s: %s; retry %d/%d in %.1f s", what, type(err).__name__, err, attempt, attempts - 1, delay
            )
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, RETRY_MAX_S)
    raise AssertionError("unreachable")
