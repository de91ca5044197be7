"""The compiled LSTM step tail (elmo/fused_step.py, elmo/csrc/lstm_cell.cpp): built on this machine, equal to the
eager step up to rounding, row-independent to the bit, and switched off cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from elmo import fused_step, published_config
from elmo.model import BiLm

REPO = Path(__file__).resolve().parent.parent
FUSES_HERE = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") and sys.platform == "linux"


def eager_tail(gates, x_part, c, clip):
    """The step's tail as elmo/model.py's eager path computes it (TF gate order i, j, f, o)."""
    i, j, f, o = (gates + x_part).split(c.shape[-1], dim=-1)
    cell = torch.addcmul(i.sigmoid() * j.tanh(), f.sigmoid(), c)
    if clip:
        cell = cell.clamp(-clip, clip)
    return cell, o.sigmoid() * torch.tanh(cell)


def random_step(dtype, rows=7, d=40, seed=0):
    """gates (2, rows, 4D) contiguous; x_part a strided slice of a bigger buffer, as in the LSTM; bias (2, 4D);
    c (2, rows, D)."""
    generator = torch.Generator().manual_seed(seed)
    gates = torch.randn(2, rows, 4 * d, generator=generator, dtype=dtype) * 3
    x_all = torch.randn(2, 3 * rows, 4 * d, generator=generator, dtype=dtype) * 3
    bias = torch.randn(2, 4 * d, generator=generator, dtype=dtype)
    c = torch.randn(2, rows, d, generator=generator, dtype=dtype) * 4
    return gates, x_all[:, rows : 2 * rows], bias, c


def test_the_fused_step_is_built_and_loaded_on_this_machine():
    assert fused_step.fused_step_available() is FUSES_HERE
    if FUSES_HERE:
        assert (fused_step.extension_directory() / "elmo_fused.so").is_file()


@pytest.mark.skipif(not FUSES_HERE, reason="the fused step is built only for AVX2/AVX-512 CPUs on Linux")
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-6), (torch.float64, 1e-14)])
@pytest.mark.parametrize("clip", [None, 3.0])
def test_fused_tail_equals_the_eager_tail_up_to_rounding(dtype, atol, clip):
    gates, x_part, bias, c = random_step(dtype, d=40)  # D not a multiple of the vector width: the remainder runs
    assert not x_part.is_contiguous()
    cell, hidden_input = fused_step.cell_tail(gates, x_part, bias, c, clip)
    expected_cell, expected_hidden_input = eager_tail(gates, x_part + bias.unsqueeze(1), c, clip)
    torch.testing.assert_close(cell, expected_cell, atol=atol, rtol=0)
    torch.testing.assert_close(hidden_input, expected_hidden_input, atol=atol, rtol=0)
    if clip:
        assert cell.abs().max() == clip  # the clip is reached on these inputs, and applied
    else:
        assert cell.abs().max() > 3.5  # without a clip, cells beyond 3 are kept


@pytest.mark.skipif(not FUSES_HERE, reason="the fused step is built only for AVX2/AVX-512 CPUs on Linux")
def test_a_row_gets_the_same_bits_alone_and_among_other_rows():
    gates, x_part, bias, c = random_step(torch.float32, rows=9, d=37)
    cell, hidden_input = fused_step.cell_tail(gates, x_part, bias, c, 3.0)
    for row in (0, 4, 8):
        one = slice(row, row + 1)
        alone = fused_step.cell_tail(gates[:, one].contiguous(), x_part[:, one], bias, c[:, one], 3.0)
        assert torch.equal(alone[0], cell[:, one]) and torch.equal(alone[1], hidden_input[:, one])


@pytest.mark.skipif(not FUSES_HERE, reason="the fused step is built only for AVX2/AVX-512 CPUs on Linux")
def test_the_bilm_with_the_fused_step_matches_the_eager_bilm(monkeypatch):
    torch.manual_seed(0)
    bilm = BiLm(published_config("small")).double()
    for parameter in bilm.parameters():
        torch.nn.init.normal_(parameter, 0.0, 0.05)
    char_ids = torch.randint(1, 200, (3, 6, 50))
    char_ids[1, 4:] = 0  # a shorter sentence: rows stop at different steps
    with torch.no_grad():
        fused, _ = bilm(char_ids)
        monkeypatch.setattr(fused_step, "_loaded", False)  # as if the build had failed: the eager step
        eager, _ = bilm(char_ids)
    torch.testing.assert_close(fused, eager, atol=1e-12, rtol=0)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, check=True
    )


def test_off_runs_the_eager_step_and_a_typo_is_warned_about():
    check = "from elmo.fused_step import fused_step_available as f; print(f())"
    assert run_python(check, ELMO_FUSED_STEP="off").stdout.strip() == "False"
    typo = run_python(check, ELMO_FUSED_STEP="of")
    assert typo.stdout.strip() == str(FUSES_HERE) and "ELMO_FUSED_STEP='of' is not one of" in typo.stderr


def test_a_failed_build_falls_back_to_the_eager_step_with_a_warning(tmp_path):
    """A machine where the build fails (here: the build folder cannot be created) still embeds, and says why."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the build folder should go")
    code = (
        "import torch; from elmo.fused_step import fused_step_available as f; print(f());"
        "from elmo import Elmo; from elmo.model_dir import default_model_dir;"
        "print(Elmo.from_directory(default_model_dir()).embed([['It', 'works', '.']])[0].shape)"
    )
    done = run_python(code, ELMO_EXTENSION_DIR=str(blocker))
    lines = done.stdout.split("\n")
    assert lines[0] == "False" and lines[1].startswith("(3, 3,")
    if FUSES_HERE:
        assert "the fused LSTM step could not be built or loaded" in done.stderr


@pytest.mark.skipif(not FUSES_HERE, reason="the fused step is built only for AVX2/AVX-512 CPUs on Linux")
def test_two_processes_building_at_once_both_load_it_and_leave_one_library(tmp_path):
    """First use on a fresh machine by two workers at once (a Flink TaskManager's SDK workers): each builds in its
    own staging folder and moves the library into place atomically; a third process then loads it without building."""
    code = (
        "import logging, torch; logging.basicConfig();"
        "from elmo import fused_step; ok = fused_step.fused_step_available();"
        "gates = torch.zeros(2, 1, 8); c = torch.zeros(2, 1, 2);"
        "print(ok, fused_step.cell_tail(gates, gates, torch.zeros(2, 8), c, None)[0].sum().item())"
    )
    env = {**os.environ, "ELMO_EXTENSION_DIR": str(tmp_path)}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    starts = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, **pipes) for _ in range(2)]
    for process in starts:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()
        assert out.decode().split() == ["True", "0.0"]  # c = sigmoid(0) * tanh(0) + sigmoid(0) * 0 = 0
        assert b"building the fused LSTM step" in err
    [folder] = tmp_path.iterdir()
    assert [p.name for p in folder.iterdir()] == ["elmo_fused.so"]  # no staging folder left behind
    third = run_python(code, ELMO_EXTENSION_DIR=str(tmp_path))
    assert third.stdout.split() == ["True", "0.0"] and "building" not in third.stderr


def random_bf16_step(rows=5, d=40, seed=0):
    """The bf16 tail's inputs: gates (2, rows, 4D) bfloat16 contiguous, x_part a strided bfloat16 slice, bias
    (2, 4D) and c (2, rows, D) float32."""
    gates, x_part, bias, c = random_step(torch.float32, rows=rows, d=d, seed=seed)
    x_all = torch.zeros(2, 3 * rows, 4 * d, dtype=torch.bfloat16)
    x_all[:, rows : 2 * rows] = x_part.to(torch.bfloat16)
    return gates.to(torch.bfloat16), x_all[:, rows : 2 * rows], bias, c


@pytest.mark.skipif(not FUSES_HERE, reason="the fused step is built only for AVX2/AVX-512 CPUs on Linux")
@pytest.mark.parametrize("d", [8, 24, 40, 64])  # a half vector, one and a half, a partial second half, exact
@pytest.mark.parametrize("clip", [None, 3.0])
def test_fused_bf16_tail_computes_the_float32_tail_of_its_rounded_inputs(d, clip):
    """bfloat16 gates and input part, float32 bias and cell: the gate sum and the cell in float32, the projection's
    input rounded once to bfloat16 (at most one bfloat16 step, 2^-8 relative, from the float32 result)."""
    gates, x_part, bias, c = random_bf16_step(d=d)
    cell, hidden_input = fused_step.cell_tail_bf16(gates, x_part, bias, c, clip)
    assert cell.dtype == torch.float32 and hidden_input.dtype == torch.bfloat16
    expected_cell, expected_hidden_input = eager_tail(gates.float(), x_part.float() + bias.unsqueeze(1), c, clip)
    torch.testing.assert_close(cell, expected_cell, atol=1e-6, rtol=0)
    torch.testing.assert_close(hidden_input.float(), expected_hidden_input, atol=1e-6, rtol=2.0**-8)
    assert fused_step.can_fuse_bf16(gates, x_part, c)
    assert not fused_step.can_fuse_bf16(gates.float(), x_part, c)  # float gates take the float32 kernel


@pytest.mark.skipif(not FUSES_HERE, reason="the fused step is built only for AVX2/AVX-512 CPUs on Linux")
def test_fused_bf16_tail_rows_do_not_depend_on_their_neighbours():
    gates, x_part, bias, c = random_bf16_step(rows=9, d=40)
    cell, hidden_input = fused_step.cell_tail_bf16(gates, x_part, bias, c, 3.0)
    some_cell, some_hidden_input = fused_step.cell_tail_bf16(
        gates[:, 3:5].contiguous(), x_part[:, 3:5], bias, c[:, 3:5], 3.0
    )
    assert torch.equal(some_cell, cell[:, 3:5]) and torch.equal(some_hidden_input, hidden_input[:, 3:5])
