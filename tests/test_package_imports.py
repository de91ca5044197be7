"""The package's public names load lazily: the tokenizer imports without torch, ``from elmo import ...`` works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter (nothing imported yet) from the repository root."""
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_tokenizer_imports_without_torch():
    result = _run("import elmo.tokenize, sys; assert 'torch' not in sys.modules, 'torch was imported'")
    assert result.returncode == 0, result.stderr


def test_config_imports_without_torch():
    result = _run("from elmo import ElmoConfig, published_config; import sys; assert 'torch' not in sys.modules")
    assert result.returncode == 0, result.stderr


def test_public_names_resolve_to_their_modules():
    import elmo
    from elmo import Elmo, ElmoConfig, LayerChoice, ScalarMix, published_config
    from elmo.api import Elmo as ApiElmo
    from elmo.config import ElmoConfig as ConfigElmoConfig
    from elmo.config import published_config as config_published_config
    from elmo.mix import LayerChoice as MixLayerChoice
    from elmo.mix import ScalarMix as MixScalarMix

    assert (Elmo, ElmoConfig, LayerChoice, ScalarMix, published_config) == (
        ApiElmo,
        ConfigElmoConfig,
        MixLayerChoice,
        MixScalarMix,
        config_published_config,
    )
    assert set(elmo.__all__) <= set(dir(elmo))
    with pytest.raises(AttributeError, match="no attribute 'Elmoo'"):
        elmo.Elmoo  # noqa: B018
