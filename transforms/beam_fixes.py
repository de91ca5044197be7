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
- ``reuse_option_views`` (``apache_beam.options.pipeline_options:PipelineOptions.view_as``): every ``view_as``
  builds a new argument parser for the view's class and parses the flags again (~0.8 ms); building and running our
  graph asks ~550 times (type checks ask for ``TypeOptions`` at every ``apply``), ~0.45 s a run. A view only holds
  the parsed flags and the options' shared value store, so the view made for the same flags and store is reused.
- ``remember_dofn_specs`` (``apache_beam.transforms.userstate:get_dofn_specs``): the state and timer specs of a
  DoFn come from ``inspect.signature`` of each of its ~30 methods (~1.2 ms), recomputed for the same DoFn object 3-4
  times while the graph is built and again when each bundle processor is set up (~480 times a run, ~0.6 s). They
  are kept per DoFn object (by identity, for as long as it lives).

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
import weakref
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


def _reuse_option_views(options_class: Any) -> None:
    """``view_as`` answers from a per-options cache keyed by (view class, the shared value store, the flags): the
    same view object as the first call made, which reads and writes the same store."""
    original = options_class.view_as
    if getattr(original, _MARK, False):
        return
    views: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # options -> {key: view}
    lock = threading.Lock()

    def view_as(self, cls):
        flags = self._flags
        if flags is None or isinstance(flags, str):  # None: parsed from sys.argv, which may change
            return original(self, cls)
        key = (cls, id(self._all_options), tuple(flags))  # the view keeps the store alive: its id stays its own
        try:
            with lock:
                cached = views.get(self, {}).get(key)
        except TypeError:  # not weakly referable or not hashable: no cache
            return original(self, cls)
        if cached is not None:
            return cached
        view = original(self, cls)
        with lock:
            views.setdefault(self, {})[key] = view
        return view

    setattr(view_as, _MARK, True)
    view_as.__doc__ = original.__doc__
    options_class.view_as = view_as


def _remember_dofn_specs(userstate: Any) -> None:
    """``get_dofn_specs(dofn)`` computed once per DoFn object (by ``id``, forgotten when the object is freed)."""
    original = userstate.get_dofn_specs
    if getattr(original, _MARK, False):
        return
    specs: dict[int, tuple] = {}
    lock = threading.Lock()

    def get_dofn_specs(dofn):
        with lock:
            known = specs.get(id(dofn))
        if known is not None:
            return set(known[0]), set(known[1])
        state_specs, timer_specs = original(dofn)
        try:
            weakref.finalize(dofn, specs.pop, id(dofn), None).atexit = False  # nothing to forget at exit
        except TypeError:  # not weakly referable: its id could be reused after it is freed, so not kept
            return state_specs, timer_specs
        with lock:
            specs[id(dofn)] = (frozenset(state_specs), frozenset(timer_specs))
        return state_specs, timer_specs

    setattr(get_dofn_specs, _MARK, True)
    get_dofn_specs.__doc__ = original.__doc__
    userstate.get_dofn_specs = get_dofn_specs


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
        "reuse_option_views",
        "apache_beam.options.pipeline_options:PipelineOptions.view_as",
        ("2.77.0", "2.77.0"),
        "",
        _reuse_option_views,
    ),
    BeamFix(
        "remember_dofn_specs",
        "apache_beam.transforms.userstate:get_dofn_specs",
        ("2.77.0", "2.77.0"),
        "",
        _remember_dofn_specs,
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
