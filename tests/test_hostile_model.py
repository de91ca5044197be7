"""Hostile model files, flags and arguments: each is refused early, with a message naming the culprit.

Faces: broken weights/options (NaN, extra datasets, nonsense values, bad JSON), layer mixes that are not finite,
checkpoints that would run code, ``python -m elmo.embed`` protecting its files (BOM, output = input, interrupts),
one-line CLI errors with exit codes, and the Python API checking its arguments.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from elmo import Elmo, LayerChoice, ScalarMix
from elmo.api import validate_device
from elmo.cli import run_cli
from elmo.config import ElmoConfig, OptionsError
from elmo.embed import main as embed_main
from elmo.errors import ConfigError, ModelFilesError
from elmo.mix import apply_layer_choice
from elmo.training.train import CheckpointError, plain_data, read_checkpoint
from elmo.training.train import main as train_main
from elmo.weights import WeightsFormatError
from tests.model_files import TINY_MODEL

REPO = Path(__file__).resolve().parents[1]
TINY = TINY_MODEL
LINES = ["The cat sat .", "A bank by the river .", "Birds fly ."]


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A private copy of the tiny model, free to corrupt."""
    target = tmp_path / "model"
    target.mkdir()
    for name in ("options.json", "weights.hdf5"):
        shutil.copy(TINY / name, target / name)
    return target


@pytest.fixture(scope="module")
def tiny() -> Elmo:
    return Elmo.from_directory(TINY, initial_state="zeros")


def _edit_options(directory: Path, edit) -> Path:
    path = directory / "options.json"
    options = json.loads(path.read_text())
    edit(options)
    path.write_text(json.dumps(options))
    return path


def _embed_args(tmp_path: Path, model: Path = TINY, lines=LINES, output: str | None = None) -> list[str]:
    src = tmp_path / "in.txt"
    if not src.exists():
        src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [
        "--options",
        str(model / "options.json"),
        "--weights",
        str(model / "weights.hdf5"),
        "--input",
        str(src),
        "--output",
        output or str(tmp_path / "out.hdf5"),
    ]


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, check=False, cwd=REPO, env=env
    )


# -- 5. a broken configuration fails early ------------------------------------------------------------------------


def test_non_finite_weights_are_named(model_dir):
    with h5py.File(model_dir / "weights.hdf5", "r+") as f:
        data = f["CNN/W_cnn_0"][...]
        data.flat[:3] = [np.nan, np.inf, -np.inf]
        f["CNN/W_cnn_0"][...] = data
    with pytest.raises(WeightsFormatError, match=r"weights\.hdf5: dataset 'CNN/W_cnn_0' holds 3 non-finite values"):
        Elmo.from_directory(model_dir)


def test_options_disagreeing_with_weights_are_refused_not_truncated(model_dir):
    _edit_options(model_dir, lambda o: o["lstm"].update(n_layers=1))
    with pytest.raises(WeightsFormatError, match=r"datasets the options do not use: .*Cell1.*lstm\.n_layers=1"):
        Elmo.from_directory(model_dir)


def test_an_unknown_extra_dataset_is_refused(model_dir):
    with h5py.File(model_dir / "weights.hdf5", "r+") as f:
        f.create_dataset("softmax/W", data=np.zeros((4, 4), np.float32))
    with pytest.raises(WeightsFormatError, match=r"1 datasets the options do not use: 'softmax/W'"):
        Elmo.from_directory(model_dir)


@pytest.mark.parametrize("text", ["nan,0,0", "1e309,0,0", "0,-inf,0", "1,1,1;gamma=nan", "1,1,1;gamma=inf"])
def test_non_finite_layer_mix_is_refused(text):
    bad = text.split("=")[-1] if "gamma" in text else next(p for p in text.split(",") if not math.isfinite(float(p)))
    with pytest.raises(ValueError, match=f"'{bad}'.*not a finite number"):
        LayerChoice.parse(text)


def test_non_finite_mix_objects_are_refused():
    with pytest.raises(ValueError, match="layer mix weight 1 must be a finite number, not inf"):
        LayerChoice("weights", (0.0, math.inf, 0.0))
    with pytest.raises(ValueError, match="layer mix gamma must be a finite number, not nan"):
        LayerChoice("weights", (0.0, 0.0, 0.0), gamma=math.nan)
    with pytest.raises(ValueError, match="mix weight 0 must be a finite number"):
        ScalarMix(3, initial_weights=[math.nan, 0, 0])
    with pytest.raises(ValueError, match="mix gamma must be a finite number"):
        ScalarMix(3, gamma=math.inf)
    with pytest.raises(ValueError, match="n_layers must be a positive integer"):
        ScalarMix(0)
    with pytest.raises(ValueError, match="2 mix weights given for 3 layers"):
        apply_layer_choice(np.zeros((3, 2, 4), np.float32), LayerChoice.parse("1,2"))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda o: o["lstm"].update(dim=0), "lstm.dim must be a positive integer, not 0"),
        (lambda o: o["lstm"].update(projection_dim=-16), "lstm.projection_dim must be a positive integer, not -16"),
        (lambda o: o["lstm"].pop("n_layers"), "lstm.n_layers is missing"),
        (lambda o: o["char_cnn"].update(activation="gelu"), "char_cnn.activation must be one of"),
        (lambda o: o["char_cnn"].update(filters=[]), "char_cnn.filters must be a non-empty list"),
        (lambda o: o["char_cnn"].update(filters=[[1, 4], [2, 0]]), r"char_cnn.filters\[1\]\[1\] \(count\)"),
        (lambda o: o["char_cnn"]["embedding"].update(dim=2.5), "char_cnn.embedding.dim must be a positive integer"),
        (lambda o: o["lstm"].update(use_skip_connections="false"), "lstm.use_skip_connections must be true or false"),
        (lambda o: o["lstm"].update(cell_clip=-3), "lstm.cell_clip must be null, 0"),
        (lambda o: o["lstm"].update(n_layer=2), r"lstm has unknown keys \['n_layer'\]"),
        (lambda o: o.pop("char_cnn"), "char_cnn is missing"),
    ],
)
def test_nonsense_options_name_the_file_and_key(model_dir, edit, message):
    path = _edit_options(model_dir, edit)
    with pytest.raises(OptionsError, match=f"{re.escape(str(path))}: {message}"):
        ElmoConfig.from_json(str(path))


def test_invalid_json_names_file_line_and_column(model_dir):
    path = model_dir / "options.json"
    path.write_text('{\n  "lstm": {"dim": 64,,}\n}\n')
    with pytest.raises(OptionsError, match=rf"{path}: invalid JSON at line 2 column 22"):
        Elmo.from_directory(model_dir)
    path.write_text('{"lstm": {"cell_clip": NaN}}')
    with pytest.raises(OptionsError, match="NaN is not a valid JSON number"):
        ElmoConfig.from_json(str(path))


# -- 6. nothing executes code from files ---------------------------------------------------------------------------


class _Payload:
    """Pickles into a call of os.system: what a crafted checkpoint carries."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _evil_checkpoint(path: Path, marker: Path) -> None:
    torch.save(
        {
            "config": {"model": _Payload(f"touch {marker}")},
            "state_dict": {},
            "optimizer": {},
            "step": 0,
            "lstm_state": [],
            "history": [],
        },
        path,
    )


def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    checkpoint = tmp_path / "evil.pt"
    _evil_checkpoint(checkpoint, marker)
    with pytest.raises(CheckpointError, match=r"refusing checkpoint .*evil\.pt.*(posix|nt)\.system"):
        read_checkpoint(checkpoint)
    status = train_main(["--export-checkpoint", str(checkpoint), "--export", str(tmp_path / "x"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2 and "refusing checkpoint" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "x").exists()
    # The resume path (a checkpoint found in --out) refuses it too.
    out = tmp_path / "run"
    out.mkdir()
    _evil_checkpoint(out / "checkpoint-rank0.pt", marker)
    (tmp_path / "train.txt").write_text("the cat sat .\na dog ran .\n" * 20)
    (tmp_path / "vocab.txt").write_text("<S>\n</S>\n<UNK>\nthe\ncat\nsat\n.\n")
    shutil.copy(TINY / "options.json", tmp_path / "options.json")
    options = _edit_options(tmp_path, lambda o: o["lstm"].update(cell_clip=None, proj_clip=None))
    args = ["--train", str(tmp_path / "train.txt"), "--vocab", str(tmp_path / "vocab.txt"), "--out", str(out)]
    args += ["--options", str(options), "--batch-size", "2", "--max-steps", "1", "--device", "cpu"]
    assert train_main(args) == 2
    assert "refusing checkpoint" in capsys.readouterr().err
    assert not marker.exists()
    # The payload is real: an unsafe load would have run it.
    torch.load(checkpoint, weights_only=False)
    assert marker.exists()


def test_checkpoint_content_is_plain_data(tmp_path):
    saved = plain_data({"a": np.arange(3), "b": np.float64(0.5), "c": [np.int64(2)], "d": (1, None)})
    torch.save(saved, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)
    assert torch.equal(loaded["a"], torch.arange(3)) and loaded["b"] == 0.5 and loaded["c"] == [2]
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        read_checkpoint(tmp_path / "c.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")


# -- 8. python -m elmo.embed protects its files --------------------------------------------------------------------


def test_bom_at_start_of_input_is_stripped(tmp_path, tiny):
    (tmp_path / "in.txt").write_bytes(b"\xef\xbb\xbf" + "\n".join(LINES).encode() + b"\n")
    assert embed_main([*_embed_args(tmp_path), "--initial-state", "zeros"]) == 0
    with h5py.File(tmp_path / "out.hdf5", "r") as f:
        assert json.loads(f["sentence_to_index"][0])["The cat sat ."] == "0"
        np.testing.assert_allclose(f["0"][...], tiny.embed_sentence(LINES[0].split()), atol=1e-5)


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "weights"])
def test_output_that_is_an_input_file_is_refused(tmp_path, capsys, spelling, model_dir):
    args = _embed_args(tmp_path, model=model_dir)
    src = tmp_path / "in.txt"
    before = src.read_bytes(), (model_dir / "weights.hdf5").read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.txt").symlink_to(src)
    output = {
        "same": str(src),
        "dotdot": str(tmp_path / "sub" / ".." / "in.txt"),
        "symlink": str(tmp_path / "link.txt"),
        "weights": str(model_dir / "weights.hdf5"),
    }[spelling]
    assert embed_main([*args[:-1], output]) == 2
    flag = "--weights" if spelling == "weights" else "--input"
    assert f"is the same file as {flag}" in capsys.readouterr().err
    assert (src.read_bytes(), (model_dir / "weights.hdf5").read_bytes()) == before


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_interrupted_run_leaves_no_partial_output(tmp_path, monkeypatch, failure):
    out = tmp_path / "out.hdf5"
    out.write_bytes(b"previous output")
    real_embed = Elmo.embed
    calls = []

    def failing_embed(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise failure("killed mid-way")
        return real_embed(self, *args, **kwargs)

    monkeypatch.setattr(Elmo, "embed", failing_embed)
    args = [*_embed_args(tmp_path), "--batch-size", "1", "--initial-state", "zeros"]
    if failure is KeyboardInterrupt:
        assert embed_main(args) == 130
    else:
        with pytest.raises(RuntimeError, match="killed mid-way"):  # a bug keeps its traceback
            embed_main(args)
    assert out.read_bytes() == b"previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.hdf5"]
    out.unlink()
    monkeypatch.setattr(Elmo, "embed", real_embed)
    assert embed_main(args) == 0 and h5py.is_hdf5(out)


# -- 9. errors read like errors --------------------------------------------------------------------------------------


def test_cli_errors_are_one_line_with_exit_2_and_debug_shows_the_traceback(tmp_path, model_dir, capsys):
    """In process (the module's entry point runs in tests/test_embed_cli.py): what ``main`` returns is the exit
    status, and ``--debug`` lets the error through (a traceback, exit status 1, in a process)."""
    (model_dir / "options.json").write_text('{"lstm": {\n  "dim": 64\n')
    assert embed_main(_embed_args(tmp_path, model=model_dir)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m elmo.embed: error: ")
    assert f"{model_dir / 'options.json'}: invalid JSON at line 3" in lines[0]
    with pytest.raises(OptionsError, match="invalid JSON at line 3"):
        embed_main([*_embed_args(tmp_path, model=model_dir), "--debug"])


@pytest.mark.parametrize("device", ["cuda:99", "tpu", "garbage!", "meta"])
def test_unusable_device_is_refused_before_loading(tmp_path, capsys, device):
    missing = tmp_path / "nowhere"
    args = _embed_args(tmp_path, model=missing)  # loading would fail differently: the device is checked first
    assert embed_main([*args, "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device" in err and device in err
    with pytest.raises(ConfigError, match="device"):
        validate_device(device)
    assert train_main(["--export-checkpoint", "x.pt", "--export", str(tmp_path), "--device", device]) == 2


def test_missing_model_files_are_named(tmp_path, model_dir, capsys):
    with pytest.raises(ModelFilesError, match=f"model directory {tmp_path / 'nope'} does not exist"):
        Elmo.from_directory(tmp_path / "nope")
    (model_dir / "weights.hdf5").unlink()
    with pytest.raises(ModelFilesError, match=f"{model_dir} has no weights.hdf5"):
        Elmo.from_directory(model_dir)
    assert embed_main(_embed_args(tmp_path, model=model_dir)) == 2
    assert f"weights file {model_dir / 'weights.hdf5'} does not exist" in capsys.readouterr().err


def test_train_usage_errors_are_one_line(tmp_path, capsys):
    result = _cli("elmo.training.train", "--train", "x.txt", "--device", "cpu")
    assert result.returncode == 2 and result.stderr.strip() == (
        "python -m elmo.training.train: error: --train and --vocab are required for training"
    )
    # the rest in process: main's return value is the exit status
    assert train_main(["--export-checkpoint", str(tmp_path / "none.pt"), "--export", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint" in err and "does not exist" in err


def test_run_cli_classifies_errors(capsys):
    def fails(err):
        def main(argv):
            raise err

        return main

    assert run_cli(fails(OptionsError("options.json: lstm.dim is missing")), [], prog="p") == 2
    assert capsys.readouterr().err == "p: error: options.json: lstm.dim is missing\n"
    assert run_cli(fails(FileNotFoundError(2, "No such file", "in.txt")), [], prog="p") == 1
    assert "in.txt" in capsys.readouterr().err
    assert run_cli(fails(ValueError("plan")), [], prog="p", expected=(ValueError,)) == 2
    with pytest.raises(ZeroDivisionError):  # a bug: traceback
        run_cli(fails(ZeroDivisionError()), [], prog="p")
    with pytest.raises(OptionsError):  # --debug: every traceback
        run_cli(fails(OptionsError("x")), ["--debug"], prog="p")


# -- 11. the Python API checks its arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sentences", "error", "message"),
    [
        ("a plain string", TypeError, "sentences must be a list of token lists, not str"),
        (["a", "b"], TypeError, "sentence 0 is a str, not a list of tokens"),
        ([["a", ""]], ValueError, "sentence 0, token 1 is an empty string"),
        ([["a"], ["b", 3]], TypeError, "sentence 1, token 1 is a int, not a string"),
        ([["a"], [], ["b"]], ValueError, "sentence 1 is empty"),
        (None, TypeError, "sentences must be a list of token lists, not NoneType"),
    ],
)
def test_embed_refuses_malformed_sentences(tiny, sentences, error, message):
    with pytest.raises(error, match=message):
        tiny.embed(sentences)


def test_embed_checks_batch_size_layers_and_handles_no_sentences(tiny):
    for batch_size in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            tiny.embed([["a"]], batch_size=batch_size)
    with pytest.raises(ValueError, match=r"'nan'.*not a finite number"):
        tiny.embed([["a"]], layers="nan,0,0")
    with pytest.raises(ValueError, match="2 mix weights; the model has 3 layers"):
        tiny.embed([["a"]], layers="0,1")
    with pytest.raises(TypeError, match="layers must be"):
        tiny.embed([["a"]], layers=3)
    with pytest.raises(TypeError, match="not a string"):
        tiny.embed_sentence("word")
    assert tiny.embed([]) == []
    assert tiny.embed((("a", "b"),), layers="top")[0].shape == (2, 32)  # tuples are fine
    with pytest.raises(ValueError, match="dtype must be a floating point"):
        Elmo.load(TINY / "options.json", TINY / "weights.hdf5", dtype=torch.int64)
    with pytest.raises(ValueError, match="initial_state must be one of"):
        Elmo.load(TINY / "options.json", TINY / "weights.hdf5", initial_state="hot")
