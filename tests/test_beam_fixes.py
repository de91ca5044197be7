"""transforms/beam_fixes.py: every fix of Beam internals covers the installed Beam, finds its attribute, is applied
once (idempotent) and does what it says. A Beam upgrade that moves or removes a patched attribute, or that is
outside a fix's checked versions, fails here, loudly: re-read that Beam's source, then drop or re-check the fix."""

from __future__ import annotations

import importlib
import logging

import apache_beam
import pytest

from transforms import beam_fixes
from transforms.beam_fixes import BEAM_VERSION, FIXES, BeamFix, BeamFixError, apply_all, version_tuple


def test_the_fixes_module_is_the_only_place_that_patches_beam():
    assert {fix.name for fix in FIXES} == {
        "empty_s3_upload",
        "reuse_s3_client",
        "skip_adc_for_gcs_emulator",
        "rusage_without_scipy",
        "reuse_option_views",
        "remember_dofn_specs",
    }
    assert BEAM_VERSION == apache_beam.__version__


@pytest.mark.parametrize("fix", FIXES, ids=lambda f: f.name)
def test_every_fix_was_checked_for_the_installed_beam(fix: BeamFix):
    assert fix.covers(), (
        f"{fix.name} was written for apache-beam {fix.checked[0]}..{fix.checked[1]}, this is {BEAM_VERSION}: read "
        f"{fix.target} in this Beam, then delete the fix (fixed upstream) or extend `checked`"
    )


@pytest.mark.parametrize("fix", FIXES, ids=lambda f: f.name)
def test_every_patched_attribute_is_there_and_patched(fix: BeamFix):
    holder = fix.holder()  # raises BeamFixError when the attribute is gone
    assert holder is not None, f"{fix.module_name} does not import: the apache-beam[{fix.extra}] extra is missing"
    assert beam_fixes.APPLIED[fix.name] == "applied"


def test_a_missing_attribute_fails_loudly():
    gone = BeamFix("gone", "apache_beam.io.aws.s3io:S3Uploader.no_such_method", ("2.62.0", "99.0.0"), "aws", print)
    with pytest.raises(BeamFixError, match=r"S3Uploader.no_such_method is gone in apache-beam"):
        gone.holder()


def test_version_guard(monkeypatch, caplog):
    assert version_tuple("2.78.0.dev0") == (2, 78, 0) and version_tuple("2.77.0rc1") == (2, 77, 0)
    fix = FIXES[0]
    assert fix.covers(fix.checked[0]) and fix.covers(fix.checked[1])
    assert not fix.covers("2.61.0") and not fix.covers("99.0.0")
    monkeypatch.setattr(beam_fixes, "BEAM_VERSION", "99.0.0")
    monkeypatch.setattr(BeamFix, "covers", lambda self, version=None: False)
    with caplog.at_level(logging.WARNING, logger="transforms.beam_fixes"):
        assert beam_fixes.apply_fix(fix.name) == "outside checked range"
    assert "not applied" in caplog.text


def test_applying_twice_changes_nothing():
    from apache_beam.internal.gcp import auth
    from apache_beam.io.aws import s3io
    from apache_beam.io.aws.clients.s3 import boto3_client
    from apache_beam.ml.inference import base
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.transforms import userstate

    def patched():
        return (s3io.S3Uploader.finish, boto3_client.boto3, base.resource, auth._Credentials, PipelineOptions.view_as,
                userstate.get_dofn_specs)  # fmt: skip

    before = patched()
    assert set(apply_all().values()) == {"applied"}
    assert patched() == before
    assert getattr(PipelineOptions.view_as, "elmo_fixed", False)
    assert getattr(userstate.get_dofn_specs, "elmo_fixed", False)
    assert getattr(s3io.S3Uploader.finish, "elmo_fixed", False) and getattr(boto3_client.boto3, "elmo_fixed", False)


def test_empty_s3_upload_sends_one_empty_part():
    from apache_beam.io.aws import s3io

    calls = []

    class Uploader:  # the attributes finish() reads, without a server
        parts: list = []  # noqa: RUF012
        buffer = b""
        last_error = None

        def _write_to_s3(self, data):
            calls.append(("part", data))
            self.parts = [{"ETag": "e", "PartNumber": 1}]

    original = s3io.S3Uploader.finish.__closure__[0].cell_contents  # Beam's own finish, wrapped by the fix
    assert original.__qualname__ == "S3Uploader.finish"
    Uploader.finish = s3io.S3Uploader.finish
    uploader = Uploader()
    uploader._client = type("C", (), {"complete_multipart_upload": lambda self, r: calls.append(("complete", r))})()
    uploader._bucket, uploader._name, uploader.upload_id = "b", "k", "u"
    uploader.finish()
    assert calls[0] == ("part", b"") and calls[-1][0] == "complete" and calls[-1][1].parts == uploader.parts


def test_one_s3_client_per_process_and_settings(monkeypatch):
    from apache_beam.io.aws.clients.s3 import boto3_client

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    options = {"s3_region_name": "us-east-1", "s3_endpoint_url": "http://127.0.0.1:9"}
    first, second = boto3_client.Client(options), boto3_client.Client(options)
    assert first.client is second.client  # no connection is made to build a client
    other = boto3_client.Client({**options, "s3_region_name": "eu-west-1"})
    assert other.client is not first.client


def test_gcs_emulator_skips_the_credentials_lookup(monkeypatch):
    from apache_beam.internal.gcp import auth

    monkeypatch.setattr(auth._Credentials, "_credentials_init", False)
    monkeypatch.setattr(auth._Credentials, "_credentials", "stale")
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    beam_fixes.skip_adc_for_gcs_emulator()
    assert auth._Credentials._credentials_init is False  # without an emulator Beam looks up ADC as usual
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    beam_fixes.skip_adc_for_gcs_emulator()
    assert auth._Credentials._credentials_init is True and auth._Credentials._credentials is None


def test_model_load_memory_is_measured_without_scipy(caplog):
    base = importlib.import_module("apache_beam.ml.inference.base")
    assert base.resource is not None
    with caplog.at_level(logging.WARNING):
        assert base._get_current_process_memory_in_bytes() > 0
    assert "Resource module is not available" not in caplog.text


def test_option_views_are_reused_and_share_one_value_store():
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TypeOptions

    options = PipelineOptions(["--runner=DirectRunner", "--streaming"])
    view = options.view_as(StandardOptions)
    assert options.view_as(StandardOptions) is view  # parsed once
    assert view.runner == "DirectRunner" and view.streaming is True
    view.runner = "FlinkRunner"  # a write through one view is seen through every view and the options
    assert options.view_as(StandardOptions).runner == "FlinkRunner" and options.get_all_options()["runner"] == (
        "FlinkRunner"
    )
    assert options.view_as(TypeOptions) is not view and options.view_as(TypeOptions).pipeline_type_check is True
    other = PipelineOptions(["--runner=DirectRunner"])  # other options: their own views and values
    assert other.view_as(StandardOptions) is not view and other.view_as(StandardOptions).streaming is False
    options._flags.append("--no_pipeline_type_check")  # flags changed in place: parsed again
    assert options.view_as(TypeOptions).pipeline_type_check is True  # the store already holds the value (Beam's rule)
    assert options.view_as(StandardOptions) is not view


def test_dofn_specs_are_computed_once_per_dofn_object(monkeypatch):
    import apache_beam.runners.common as common
    from apache_beam.transforms import userstate
    from apache_beam.transforms.userstate import BagStateSpec

    class Stateful(apache_beam.DoFn):
        BAG = BagStateSpec("bag", apache_beam.coders.VarIntCoder())

        def process(self, element, bag=apache_beam.DoFn.StateParam(BAG)):  # noqa: B008 (Beam's way)
            yield element

    wrapped = []

    class CountingMethodWrapper(common.MethodWrapper):
        def __init__(self, obj, name):
            wrapped.append(name)
            super().__init__(obj, name)

    monkeypatch.setattr(common, "MethodWrapper", CountingMethodWrapper)
    dofn = Stateful()
    first = userstate.get_dofn_specs(dofn)
    assert first == ({Stateful.BAG}, set()) and "process" in wrapped
    wrapped.clear()
    assert userstate.get_dofn_specs(dofn) == first and wrapped == []  # remembered: no signature read again
    assert userstate.is_stateful_dofn(dofn) and wrapped == []
    assert userstate.get_dofn_specs(apache_beam.Map(len).dofn) == (set(), set()) and wrapped  # another object
