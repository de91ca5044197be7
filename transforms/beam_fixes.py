"""Every fix of Apache Beam internals this project makes, in one module, applied once per process.

Importing this module applies them (``transforms.files`` imports it, so does every process that runs our stages).
Each fix replaces one attribute of a Beam module and is guarded by the Beam versions whose source it was written
and checked against (``FIXES``): outside that range it is not applied and a warning says so, and
``tests/test_beam_fixes.py`` fails, as it does when the patched attribute is gone. Before moving the apache-beam
pin: read the new Beam's code at each ``target``, then delete the fix (Beam fixed it) or extend ``checked``.

- ``empty_s3_upload`` (``apache_beam.io.aws.s3io:S3Uploader.finish``): an empty file's multipart upload is
  completed with no part at all, which S3 rejects (``MalformedXML``), so every clean run failed writing its empty
  ``errors/`` shard; an empty part is uploaded first.
- ``reuse_s3_client`` (``apache_beam.io.aws.clients.s3.boto3_client:boto3``): ``S3FileSystem`` makes a new
  ``S3IO``, hence a new boto3 session and client, for every call (~0.25 s each); one client per process and
  settings is reused.
- ``skip_adc_for_gcs_emulator`` (``apache_beam.internal.gcp.auth:_Credentials``): with ``STORAGE_EMULATOR_HOST``
  set, Beam still looks for application default credentials (~23 s of retries per process off Google Cloud) before
  connecting anonymously; it connects anonymously at once.
- ``rusage_without_scipy`` (``apache_beam.ml.inference.base:resource``): Beam 2.77 imports the standard
  ``resource`` module in one ``try`` with its ``ModelManager``, which needs scipy; without scipy (we do not use the
  model manager) ``resource`` is ``None`` and every model load logs "Resource module is not available for current
  platform, memory usage cannot be fetched" and reports 0 bytes. The module is put back.

Not fixed here any more: Beam 2.62's argparse prefix matching of pipeline options (``--output`` also set
``--output_executable_path``), which Beam 2.66 turned off (``_BeamArgumentParser(allow_abbrev=False)``).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import apache_beam

_LOG = logging.getLogger(__name__)
_MARK = "elmo_fixed"  # set on every object a fix installs, so that applying twice is a no-op


class BeamFixError(RuntimeError):
    """A fix's target is not where it was in the Beam versions it was written for."""


def version_tuple(version: str) -> tuple[int, int, int]:
    """``"2.77.0"`` (or ``"2.78.0.dev0"``, ``"2.77.0rc1"``) -> ``(2, 77, 0)``."""
    found = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    if not found:
        raise ValueError(f"not a Beam version: {version!r}")
    return tuple(int(x) for x in found.groups())  # type: ignore[return-value]


BEAM_VERSION = apache_beam.__version__


@dataclass(frozen=True)
class BeamFix:
    """One patch of one Beam attribute: ``target`` is ``module:dotted.attribute``; ``checked`` the first and last
    Beam version whose source was read and found to need it; ``extra`` the apache-beam extra the module needs
    (without it the fix has nothing to patch; ``""``: none)."""

    name: str
    target: str
    checked: tuple[str, str]
    extra: str
    install: Callable[[Any], None]  # gets the object holding the attribute (module or class)

    @property
    def module_name(self) -> str:
        return self.target.split(":", 1)[0]

    @property
    def attribute_path(self) -> list[str]:
        return self.target.split(":", 1)[1].split(".")

    def covers(self, version: str = BEAM_VERSION) -> bool:
        """Whether ``version`` lies in the range this fix was checked for."""
        low, high = (version_tuple(v) for v in self.checked)
        return low <= version_tuple(version) <= high

    def holder(self) -> Any | None:
        """The object that holds the patched attribute (after checking the attribute is there), or ``None`` when
        the module cannot be imported (Beam installed without ``extra``). Raises ``BeamFixError`` when the module
        is there but the attribute is not: the fix must be re-checked against this Beam."""
        try:
            obj = importlib.import_module(self.module_name)
        except ImportError:
            return None
        *parents, name = self.attribute_path
        try:
            for part in parents:
                obj = getattr(obj, part)
            getattr(obj, name)
        except AttributeError as err:
            raise BeamFixError(
                f"Beam fix {self.name}: {self.target} is gone in apache-beam {BEAM_VERSION} (written for "
                f"{self.checked[0]}..{self.checked[1]}): re-check the fix against this Beam's source ({err})"
            ) from err
        return obj


def _empty_s3_upload(s3uploader: Any) -> None:
    original = s3uploader.finish
    if getattr(original, _MARK, False):
        return

    def finish(self):
        if not self.parts and not self.buffer and self.last_error is None:
            self._write_to_s3(b"")  # one empty part: S3 has no minimum size for the last part
        return original(self)

    setattr(finish, _MARK, True)
    s3uploader.finish = finish


_CLIENT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_MAX_ATTEMPTS")


def _reuse_s3_client(boto3_client: Any) -> None:
    """One boto3 client per process and settings (boto3 clients are thread-safe; refreshable credentials such as
    instance roles are refreshed by the client itself)."""
    if boto3_client.boto3 is None or getattr(boto3_client.boto3, _MARK, False):
        return
    import boto3

    clients: dict[tuple, Any] = {}
    lock = threading.Lock()

    class CachedSession:
        def client(self, **kwargs: Any) -> Any:
            settings = tuple(sorted((k, repr(v)) for k, v in kwargs.items()))
            key = (settings, tuple(os.environ.get(e) for e in _CLIENT_ENV))
            with lock:
                if key not in clients:
                    clients[key] = boto3.session.Session().client(**kwargs)
                return clients[key]

    boto3_client.boto3 = types.SimpleNamespace(session=types.SimpleNamespace(Session=CachedSession), **{_MARK: True})


def _skip_adc_for_gcs_emulator(auth: Any) -> None:
    """With ``STORAGE_EMULATOR_HOST`` set (and no credentials looked up yet): no credentials, so Beam's GCS client
    connects anonymously at once, as it would after its ~23 s ADC lookup failed."""
    if not os.environ.get("STORAGE_EMULATOR_HOST"):
        return
    credentials = auth._Credentials
    if not credentials._credentials_init:
        with credentials._credentials_lock:
            credentials._credentials = None
            credentials._credentials_init = True


def _rusage_without_scipy(base: Any) -> None:
    if base.resource is None:
        import resource

        base.resource = resource


FIXES: tuple[BeamFix, ...] = (
    BeamFix(
        "empty_s3_upload",
        "apache_beam.io.aws.s3io:S3Uploader.finish",
        ("2.62.0", "2.77.0"),
        "aws",
        _empty_s3_upload,
    ),
    BeamFix(
        "reuse_s3_client",
        "apache_beam.io.aws.clients.s3.boto3_client:boto3",
        ("2.62.0", "2.77.0"),
        "aws",
        _reuse_s3_client,
    ),
    BeamFix(
        "skip_adc_for_gcs_emulator",
        "apache_beam.internal.gcp.auth:_Credentials",
        ("2.62.0", "2.77.0"),
        "gcp",
        _skip_adc_for_gcs_emulator,
    ),
    BeamFix(
        "rusage_without_scipy",
        "apache_beam.ml.inference.base:resource",
        ("2.77.0", "2.77.0"),
        "",
        _rusage_without_scipy,
    ),
)
_BY_NAME = {fix.name: fix for fix in FIXES}
_apply_lock = threading.Lock()


def apply_fix(name: str) -> str:
    """Applies one fix (idempotent); returns what happened: ``applied``, ``no <extra> extra`` or ``outside
    checked range``. Raises ``BeamFixError`` when the patched attribute is gone."""
    fix = _BY_NAME[name]
    if not fix.covers():
        _LOG.warning(
            "Beam fix %s not applied: written for apache-beam %s..%s, this is %s (see transforms/beam_fixes.py)",
            fix.name,
            *fix.checked,
            BEAM_VERSION,
        )
        return "outside checked range"
    holder = fix.holder()
    if holder is None:
        return f"no {fix.extra} extra"
    with _apply_lock:
        fix.install(holder)
    return "applied"


def apply_all() -> dict[str, str]:
    """Applies every fix (idempotent); ``{name: outcome}``."""
    return {fix.name: apply_fix(fix.name) for fix in FIXES}


def skip_adc_for_gcs_emulator() -> None:
    """Re-applies the GCS emulator fix after ``STORAGE_EMULATOR_HOST`` was set in this process (tests)."""
    apply_fix("skip_adc_for_gcs_emulator")


APPLIED = apply_all()
