"""The package's public names load lazily: the tokenizer imports without torch, ``from elmo import ...`` works."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from elmo.retries import CLIENT_RETRY_DEFAULTS

REPO = Path(__file__).resolve().parents[1]


def _run(code: str, clear: Iterable[str] = (), **env: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter (nothing imported yet) from the repository root, without the
    environment variables ``clear`` and with ``env`` added."""
    environment = {k: v for k, v in os.environ.items() if k not in clear} | env
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=environment, capture_output=True, text=True, timeout=120
    )


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


def test_importing_the_storage_modules_sets_no_environment_variable():
    code = (
        "import os; before = dict(os.environ); "
        "import elmo.storage, elmo.model_cache, elmo.retries, elmo.api; "
        "changed = {k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}; "
        "assert not changed, changed"
    )
    result = _run(code, clear=CLIENT_RETRY_DEFAULTS)
    assert result.returncode == 0, result.stderr


def test_client_retry_defaults_are_set_explicitly_and_never_override_the_user():
    code = (
        "import os; from elmo.retries import configure_client_retries; configure_client_retries(); "
        "print(*(os.environ[k] for k in ('AWS_RETRY_MODE', 'AWS_MAX_ATTEMPTS', 'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT')))"
    )
    assert _run(code, clear=CLIENT_RETRY_DEFAULTS).stdout.split() == ["standard", "10", "false"]
    assert _run(code, clear=CLIENT_RETRY_DEFAULTS, AWS_MAX_ATTEMPTS="2").stdout.split() == ["standard", "2", "false"]


def test_gcs_requests_are_bounded_unless_the_user_set_a_timeout(monkeypatch):
    import fsspec
    import fsspec.config

    from elmo.retries import GCS_READ_TIMEOUT_S, configure_client_retries

    monkeypatch.setattr(fsspec.config, "conf", {})
    configure_client_retries()
    fs = fsspec.filesystem("gs", token="anon", skip_instance_cache=True)
    assert fs.requests_timeout.sock_read == GCS_READ_TIMEOUT_S and fs.requests_timeout.total is None
    monkeypatch.setattr(fsspec.config, "conf", {"gs": {"requests_timeout": 5}})
    configure_client_retries()
    assert fsspec.config.conf["gs"]["requests_timeout"] == 5  # the user's setting wins
