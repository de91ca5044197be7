"""The ``<output>/LATEST`` pointer of dated (nightly) runs: moved only after ``_SUCCESS``, and only forward in date.

``LATEST`` is a small JSON object: the newest committed dated run (``run_dir``, ``run_date``, ``model_fingerprint``)
and a ``history`` of the recent ones, newest first, so ``--previous_run latest`` can find the newest run *before*
a given date (a re-run of a day, or a late run of an earlier day, never reads itself or a later day). Updates hold
the ``_LATEST_LOCK`` claim (the same create-if-absent write as a run folder's ``_OWNER``), so two runs committing at
once never lose an entry, and a slow run of an earlier date can never move the pointer back.
"""

from __future__ import annotations

import json
import time
from typing import Any

from transforms.files import file_exists, read_text, write_text
from transforms.run_folder import RunFolderBusyError, claim, release

LATEST_FILE = "LATEST"
LATEST_LOCK = "_LATEST_LOCK"
HISTORY_RUNS = 60  # dated runs remembered in LATEST (two months of nightly runs)
LOCK_ATTEMPTS = 30  # another run holding the lock: wait up to ~30 s (it holds it for a read and a write)


def latest_path(output: str) -> str:
    """``<output>/LATEST``."""
    return output.rstrip("/") + "/" + LATEST_FILE


def read_latest(output: str) -> dict[str, Any] | None:
    """The ``LATEST`` record under ``output``, or None when there is none yet."""
    path = latest_path(output)
    return json.loads(read_text(path)) if file_exists(path) else None


def previous_entry(latest: dict[str, Any] | None, run_date: str | None, run_dir: str) -> dict[str, Any] | None:
    """The newest run recorded in ``latest`` that is dated before ``run_date`` (any date without one), never
    ``run_dir`` itself; None when there is none."""
    for entry in (latest or {}).get("history", []):
        if entry["run_dir"] != run_dir and (run_date is None or entry["run_date"] < run_date):
            return entry
    return None


def record_run(output: str, run_dir: str, run_date: str, fingerprint: str) -> bool:
    """Adds a committed dated run to ``LATEST`` and moves the pointer to it unless a later date holds it; returns
    whether the pointer moved. Call only after the run's ``_SUCCESS`` is written."""
    for attempt in range(LOCK_ATTEMPTS):
        try:
            owner = claim(output, LATEST_LOCK)
            break
        except RunFolderBusyError:
            if attempt == LOCK_ATTEMPTS - 1:
                raise
            time.sleep(1.0)
    try:
        current = read_latest(output) or {}
        entry = {"run_dir": run_dir, "run_date": run_date, "model_fingerprint": fingerprint}
        history = [e for e in current.get("history", []) if e["run_date"] != run_date and e["run_dir"] != run_dir]
        history = sorted([entry, *history], key=lambda e: e["run_date"], reverse=True)[:HISTORY_RUNS]
        moved = not current or run_date >= current["run_date"]
        top = entry if moved else {k: current[k] for k in ("run_dir", "run_date", "model_fingerprint")}
        write_text(latest_path(output), json.dumps({**top, "history": history}, indent=2, sort_keys=True) + "\n")
        return moved
    finally:
        release(output, owner.token, LATEST_LOCK)
