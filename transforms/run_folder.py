"""A run folder's safety rules: plain run ids, one owner at a time, and deleting only what a run of ours wrote.

A run writes into ``<output>/<run_id>/`` and nowhere else. Before it touches the folder it *claims* it by creating
``_OWNER`` with a create-if-absent write (``O_EXCL`` on local disk, ``ifGenerationMatch=0`` on GCS,
``If-None-Match: *`` on S3): of two runs started at once, exactly one gets the folder and the other fails without
touching it. The claim holds a random token; the commit step checks the token is still there before writing
``_SUCCESS``, then releases the claim. A run killed before that leaves ``_OWNER`` behind: a later run on the same
machine takes the folder over when that process is gone; otherwise the message says which run holds it.

Clearing a folder for a re-run deletes only files with the names our runs write (``OUR_FILE_RE``), each checked to
lie inside the folder; any other file there stops the run before anything is deleted.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from dataclasses import asdict, dataclass

from elmo import storage
from elmo.errors import ConfigError
from elmo.retries import with_retries
from transforms.files import delete_files, list_tree

RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a plain name: no separators, never "." or ".."
OWNER_FILE = "_OWNER"
SUCCESS_FILE = "_SUCCESS"
MANIFEST_FILE = "manifest.json"
OUTPUT_SUFFIXES = {  # output folder -> shard suffix
    "sentences": ".parquet",
    "vertex": ".json",
    "errors": ".jsonl",
    "vertex-delta": ".json",  # a nightly run's upserts (new and changed sentences)
    "vertex-delta/delete": ".txt",  # and the ids it deleted
}
_OUTPUT_DIR_RE = "(?:" + "|".join(re.escape(d) for d in OUTPUT_SUFFIXES) + ")"
# Every name a run of ours writes, relative to its run folder: the markers, fixed-name shards and Beam's staging.
OUR_FILE_RE = re.compile(
    rf"(?:_OWNER|_SUCCESS|manifest\.json|{_OUTPUT_DIR_RE}/part-\d{{5}}-of-\d{{5}}\.(?:parquet|json|jsonl|txt)"
    rf"|{_OUTPUT_DIR_RE}/beam-temp-[^/]+/[^/]+)"
)


class RunFolderError(ConfigError):
    """The run folder cannot be used: a bad run id, files that are not ours, or another run owns it."""


class RunFolderBusyError(RunFolderError):
    """Another run owns the run folder."""


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is a plain name (letters, digits, ``._-``, not starting with a dot or dash, <= 128)."""
    if not RUN_ID_RE.fullmatch(run_id or ""):
        raise RunFolderError(
            f"--run_id {run_id!r} is not a plain name: use letters, digits, '.', '_' and '-' (up to 128, starting "
            "with a letter or digit); a run writes only inside <output>/<run_id>/"
        )
    return run_id


def run_folder(output: str, run_id: str) -> str:
    """``<output>/<run_id>`` for a checked run id (local paths made absolute, so later checks compare like with
    like)."""
    check_run_id(run_id)
    if not output:
        raise RunFolderError("--output is empty")
    if storage.is_remote(output):
        bucket_and_path = output.split("://", 1)[1]
        if not bucket_and_path.strip("/"):
            raise RunFolderError(f"--output {output!r} names no bucket")
        return output.rstrip("/") + "/" + run_id
    return os.path.join(os.path.abspath(output), run_id)


def relative_to(path: str, folder: str) -> str | None:
    """``path`` relative to ``folder`` when it lies strictly inside it (symlinks resolved locally), else None."""
    if storage.is_remote(folder):
        prefix = folder.rstrip("/") + "/"
        inside = path.startswith(prefix) and "/../" not in "/" + path[len(prefix) :] + "/"
        return path[len(prefix) :] if inside else None
    real_folder = os.path.realpath(folder)
    real = os.path.realpath(path)
    if not real.startswith(real_folder + os.sep):
        return None
    return os.path.relpath(real, real_folder).replace(os.sep, "/")


def is_our_file(relative: str) -> bool:
    """Whether a path relative to a run folder has a name that a run of ours writes."""
    return OUR_FILE_RE.fullmatch(relative) is not None


def delete_our_files(folder: str, paths: list[str], what: str) -> None:
    """Deletes ``paths`` after checking each lies inside ``folder`` and has one of our names (else raises)."""
    for path in paths:
        relative = relative_to(path, folder)
        if relative is None or not is_our_file(relative):
            raise RunFolderError(f"refusing to delete {path}: not a file a run writes inside {folder}")
    delete_files(paths, what)


def clear_run_folder(folder: str) -> int:
    """Deletes an earlier attempt's files from ``folder`` (``_SUCCESS`` first, then the rest; our ``_OWNER``
    stays); returns how many. Refuses, deleting nothing, when the folder holds any file a run of ours does not
    write."""
    paths = list_tree(folder)
    foreign = [p for p in paths if not is_our_file(relative_to(p, folder) or "")]
    if foreign:
        raise RunFolderError(
            f"{folder} holds {len(foreign)} file(s) this pipeline does not write (e.g. {foreign[0]}); refusing "
            "to clear it: choose another --output or --run_id"
        )
    success = [p for p in paths if p.endswith("/" + SUCCESS_FILE)]
    delete_our_files(folder, success, f"deleting {folder}/{SUCCESS_FILE}")
    rest = [p for p in paths if not p.endswith(("/" + SUCCESS_FILE, "/" + OWNER_FILE))]
    delete_our_files(folder, rest, f"deleting the files of an earlier attempt under {folder}")
    return len(success) + len(rest)


# -- ownership ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    """Who holds a run folder: a random token, and where the launcher runs (for messages and stale claims)."""

    token: str
    host: str
    pid: int
    boot_id: str
    started: float  # seconds since the epoch

    @classmethod
    def new(cls) -> Owner:
        """An owner record for this launcher process."""
        return cls(uuid.uuid4().hex, socket.gethostname(), os.getpid(), _boot_id(), time.time())

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Owner:
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"a run started {started} by pid {self.pid} on {self.host}"

    def is_dead_here(self) -> bool:
        """True only when this record is from this machine (same boot) and its process no longer exists."""
        if self.host != socket.gethostname() or not self.boot_id or self.boot_id != _boot_id():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # exists, another user's
            return False
        return False


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def _owner_path(folder: str, name: str = OWNER_FILE) -> str:
    return folder.rstrip("/") + "/" + name


def _create_exclusive(path: str, data: bytes) -> None:
    """Writes ``path`` only if it does not exist, complete or not at all (atomically, on every store);
    FileExistsError otherwise."""
    if not storage.is_remote(path):
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        staged = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(staged, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(staged, path)  # fails if path exists; readers never see a half-written record
        finally:
            os.unlink(staged)
        return
    import fsspec

    fs, target = fsspec.core.url_to_fs(path)
    fs.pipe_file(target, data, mode="create")  # GCS ifGenerationMatch=0 / S3 If-None-Match: *; one request


def _delete_owner_file(path: str) -> None:
    """Deletes one owner file (through the same client that created it; gone already is fine)."""

    def delete() -> None:
        if not storage.is_remote(path):
            os.unlink(path)
            return
        import fsspec

        fs, target = fsspec.core.url_to_fs(path)
        fs.rm_file(target)

    try:
        with_retries(delete, f"deleting {path}")
    except FileNotFoundError:
        pass


def _try_create(path: str, data: bytes) -> bool:
    """``_create_exclusive`` that returns False when the file exists (an answer, not an error to retry)."""
    try:
        _create_exclusive(path, data)
    except FileExistsError:
        return False
    return True


def read_owner(folder: str, name: str = OWNER_FILE) -> Owner | None:
    """The owner record of ``folder`` (in its file ``name``), or None when nobody holds it."""
    path = _owner_path(folder, name)
    try:
        text = storage.read_bytes(path).decode("utf-8")
    except FileNotFoundError:
        return None
    try:
        return Owner.from_json(text)
    except (ValueError, KeyError, TypeError) as err:
        raise RunFolderError(
            f"{path} is not an owner record of ours ({err}); remove it if no run is using it"
        ) from None


def claim(folder: str, name: str = OWNER_FILE) -> Owner:
    """Makes this process the owner of ``folder`` (its file ``name``: ``_OWNER`` for a run folder); raises
    ``RunFolderBusyError`` naming the current owner if another run holds it. A claim left by a dead process of this
    machine is taken over."""
    owner = Owner.new()
    path = _owner_path(folder, name)
    for _ in range(2):
        if with_retries(lambda: _try_create(path, owner.to_json().encode()), f"claiming {folder}"):
            return owner
        holder = read_owner(folder, name)
        if holder is not None and holder.token == owner.token:  # our own create, retried after a lost reply
            return owner
        if holder is None or not holder.is_dead_here():
            who = holder.describe() if holder else "another run"
            raise RunFolderBusyError(
                f"{folder} is in use by {who} ({name} is there). Two runs must not write one run folder: "
                f"wait for it, or use another --run_id. If that run is dead, delete {path}"
            )
        _take_over_stale(folder, holder, name)
    raise RunFolderBusyError(f"{folder}: another run claimed it while a stale claim was being cleared")


def _take_over_stale(folder: str, holder: Owner, name: str) -> None:
    """Removes a dead process's claim (only if it is still that claim)."""
    path = _owner_path(folder, name)
    if not storage.is_remote(path):
        aside = f"{path}.stale-{holder.token}"
        try:
            os.rename(path, aside)  # atomic: of two launchers clearing the same stale claim, one wins
        except FileNotFoundError:
            return
        with open(aside, encoding="utf-8") as f:
            current = Owner.from_json(f.read())
        os.unlink(aside)
        if current.token != holder.token:  # someone else's fresh claim: put it back and let the caller fail
            _create_exclusive(path, current.to_json().encode())
        return
    current = read_owner(folder, name)
    if current is not None and current.token == holder.token:
        _delete_owner_file(path)


def check_owner(folder: str, token: str) -> None:
    """Raises ``RunFolderBusyError`` unless ``folder`` is still claimed with ``token`` (checked before committing)."""
    holder = read_owner(folder)
    if holder is None or holder.token != token:
        who = holder.describe() if holder else "nobody"
        raise RunFolderBusyError(f"not committing {folder}: it is no longer owned by this run (now: {who})")


def release(folder: str, token: str, name: str = OWNER_FILE) -> bool:
    """Removes the claim file ``name`` if it still holds ``token``; returns whether it did."""
    holder = read_owner(folder, name)
    if holder is None or holder.token != token:
        return False
    _delete_owner_file(_owner_path(folder, name))
    return True
