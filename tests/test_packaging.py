"""The default model is installed with the package: a wheel holds it and the resolver finds it from an install
that has no source checkout next to it (no network: no dependencies, no build isolation, no index)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from elmo.model_dir import DEFAULT_MODEL_NAME, PIPELINE_MODEL_FILES, default_model_dir

REPO = Path(__file__).resolve().parents[1]
# what setup.py needs to build: its packages and the files it reads
BUILD_INPUTS = ("setup.py", "pyproject.toml", "README.md", "elmo", "pipeline", "transforms", "search", "evaluation")


def _pip(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--no-deps", "--no-build-isolation", "--no-index", "-q"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the source (the build writes build/ and egg-info next to setup.py)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    source.mkdir()
    for name in BUILD_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    _pip("wheel", str(source), "-w", str(root / "dist"), cwd=root)
    (built,) = (root / "dist").glob("*.whl")
    return built


def test_the_default_model_is_in_the_source_package():
    assert default_model_dir() == REPO / "elmo" / "models" / DEFAULT_MODEL_NAME
    for name in PIPELINE_MODEL_FILES:
        assert (default_model_dir() / name).is_file(), name


def test_the_wheel_holds_the_default_model_and_no_test_model(wheel):
    with zipfile.ZipFile(wheel) as archive:
        sizes = {info.filename: info.file_size for info in archive.infolist()}
    for path in sorted(default_model_dir().iterdir()):
        assert sizes.get(f"elmo/models/{DEFAULT_MODEL_NAME}/{path.name}") == path.stat().st_size, path.name
    assert not [name for name in sizes if name.startswith("tests/") or "/tiny/" in name]


def test_an_installed_package_finds_the_default_model(wheel, tmp_path):
    target = tmp_path / "site"
    _pip("install", "--target", str(target), str(wheel), cwd=tmp_path)
    # -S: no site-packages, so neither this checkout nor an editable install of it can be found
    code = (
        "import elmo, elmo.model_dir as m; d = m.default_model_dir(); "
        "print(elmo.__file__); print(d); print(','.join(sorted(p.name for p in d.iterdir())))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    package_file, model_dir, names = result.stdout.splitlines()
    assert Path(package_file).is_relative_to(target)
    assert Path(model_dir) == target / "elmo" / "models" / DEFAULT_MODEL_NAME
    assert set(PIPELINE_MODEL_FILES) <= set(names.split(","))


@pytest.mark.integration
def test_a_plain_install_runs_the_default_job(wheel, tmp_path):
    """The wheel installed (not editable) runs the job with its defaults: the model comes from the install."""
    target = tmp_path / "site"
    _pip("install", "--target", str(target), str(wheel), cwd=tmp_path)
    text = tmp_path / "in.txt"
    text.write_text("The bank raised its rates .\nWe sat on the bank of the river .\n", encoding="utf-8")
    code = (
        "import sys, pipeline.run as r, pipeline.options as o; "
        f"assert r.__file__.startswith({str(target)!r}), r.__file__; "
        f"assert o.BUILTIN_MODEL.startswith({str(target)!r}), o.BUILTIN_MODEL; "
        f"sys.exit(r.main(['--input={text}', '--output={tmp_path / 'out'}', '--run_id=plain']))"
    )
    # PYTHONPATH comes before site-packages (the dependencies, and this checkout's editable install, come later)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "plain" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["documents_embedded"] == 2
    assert (tmp_path / "out" / "plain" / "_SUCCESS").exists()
