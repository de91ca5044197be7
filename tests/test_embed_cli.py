"""``python -m elmo.embed``: the HDF5 layout of the old ``allennlp elmo`` command, and clear input errors."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from elmo import Elmo
from elmo.embed import main
from tests.conftest import GOLDEN, golden_batches

OPTIONS = str(GOLDEN / "skip" / "options.json")
WEIGHTS = str(GOLDEN / "skip" / "lm_weights.hdf5")
LINES = ["The cat sat .", "A bank by the river .", "The cat sat ."]


def _run(tmp_path, lines, *flags) -> tuple[int, str]:
    src = tmp_path / "in.txt"
    if isinstance(lines, bytes):
        src.write_bytes(lines)
    else:
        src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return main(
        [
            "--options",
            OPTIONS,
            "--weights",
            WEIGHTS,
            "--input",
            str(src),
            "--output",
            str(tmp_path / "out.hdf5"),
            *flags,
        ]
    ), str(tmp_path / "out.hdf5")


def test_all_layers_layout_and_sentence_index(tmp_path):
    status, out = _run(tmp_path, LINES, "--all")
    assert status == 0
    model = Elmo.load(OPTIONS, WEIGHTS)
    with h5py.File(out, "r") as f:
        assert set(f.keys()) == {"0", "1", "2", "sentence_to_index"}
        assert f["1"].shape == (3, 6, 32) and f["1"].dtype == np.float32
        np.testing.assert_allclose(f["1"][...], model.embed_sentence(LINES[1].split()), atol=1e-5)
        index = json.loads(f["sentence_to_index"][0])
        assert index == {"The cat sat .": "2", "A bank by the river .": "1"}  # last duplicate wins


@pytest.mark.parametrize(("flag", "expected"), [("--top", lambda x: x[-1]), ("--average", lambda x: x.mean(0))])
def test_top_and_average(tmp_path, flag, expected):
    status, out = _run(tmp_path, LINES, flag)
    assert status == 0
    full = Elmo.load(OPTIONS, WEIGHTS).embed_sentence(LINES[0].split())
    with h5py.File(out, "r") as f:
        assert f["0"].shape == (4, 32)
        np.testing.assert_allclose(f["0"][...], expected(full), atol=1e-5)


def test_stateful_command_reproduces_golden_batches(tmp_path):
    lines = [" ".join(s) for batch in golden_batches("skip") for s in batch]
    status, out = _run(tmp_path, lines, "--top", "--stateful", "--batch-size", "3", "--forget-sentences")
    assert status == 0
    with h5py.File(out, "r") as f, h5py.File(GOLDEN / "skip" / "lm_embeddings_1.hdf5", "r") as g:
        assert "sentence_to_index" not in f
        ours = f[str(4 * 3 + 1)][...]  # batch 4, row 1
        np.testing.assert_allclose(np.stack([ours[:, :16], ours[:, 16:]]), g["4"][...], atol=1e-5)


def test_empty_line_is_reported_with_its_number(tmp_path, capsys):
    status, _ = _run(tmp_path, ["one line", "", "three"])
    assert status == 2
    assert "in.txt:2: empty line" in capsys.readouterr().err


def test_undecodable_line_is_reported_with_its_number(tmp_path, capsys):
    status, _ = _run(tmp_path, b"fine\nbad \xff\xfe bytes\n")
    assert status == 2
    assert "in.txt:2: line is not valid UTF-8" in capsys.readouterr().err


def test_duplicate_sentence_keys_are_refused(tmp_path, capsys):
    status, _ = _run(tmp_path, LINES, "--use-sentence-keys")
    assert status == 2
    assert "duplicate sentences" in capsys.readouterr().err


def test_module_entry_point_runs(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Hello world .\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "elmo.embed",
            "--options",
            OPTIONS,
            "--weights",
            WEIGHTS,
            "--input",
            str(src),
            "--output",
            str(tmp_path / "o.hdf5"),
            "--average",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "embedded 1 sentences, 3 tokens" in result.stderr


def test_bit_exact_flag_gives_the_same_bytes_whatever_the_batch_size(tmp_path):
    lines = ["The cat sat on the mat .", "A bank by the river .", "Yes .", "Prices rose again last year ."]
    outputs = []
    for batch_size in ("1", "3"):
        folder = tmp_path / batch_size
        folder.mkdir()
        status, out = _run(folder, lines, "--all", "--bit-exact", "--batch-size", batch_size)
        assert status == 0
        with h5py.File(out, "r") as f:
            outputs.append([f[str(i)][...].tobytes() for i in range(len(lines))])
    assert outputs[0] == outputs[1]


def test_token_cache_flag_is_checked(tmp_path, capsys):
    status, _ = _run(tmp_path, LINES, "--token-cache-size", "-1")
    assert status != 0 and "--token-cache-size -1: must be 0 (no cache) or more" in capsys.readouterr().err
