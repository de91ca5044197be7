"""Helpers shared by the pipeline's tests: a network-free TestPipeline and the built-in model's location."""

from __future__ import annotations

from pathlib import Path

from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

REPO = Path(__file__).resolve().parent.parent
BUILTIN_MODEL = REPO / "models" / "builtin-tiny"
SAMPLE_GLOB = str(REPO / "sample_data" / "sotu" / "*")
LOCAL_RUNNER = "FnApiRunner"  # TestPipeline() without a runner would first try to download Prism


def local_pipeline(**options) -> BeamTestPipeline:
    """A TestPipeline on the in-process runner."""
    return BeamTestPipeline(runner=LOCAL_RUNNER, **options)
