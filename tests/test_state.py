"""The canonical initial state (elmo.state) and the measurement of it (evaluation.initial_state)."""

from __future__ import annotations

import numpy as np
import pytest

from elmo import Elmo
from elmo.state import WARMUP_TEXT, canonical_state
from evaluation.initial_state import initial_state_drift
from evaluation.initial_state import main as drift_main
from tests.conftest import GOLDEN

OPTIONS, WEIGHTS = GOLDEN / "noskip" / "options.json", GOLDEN / "noskip" / "lm_weights.hdf5"
SENTENCE = ["the", "bank", "of", "the", "river", "."]


@pytest.fixture(scope="module")
def zeros_model() -> Elmo:
    return Elmo.load(OPTIONS, WEIGHTS, initial_state="zeros")


def test_warm_equals_the_stateful_run_of_the_warmup_text_from_zeros(zeros_model):
    """The definition, through the public API: a warm model's vectors are a zero-state model's after it ran the
    warm-up text statefully, one sentence at a time."""
    zeros_model.reset_state()
    for sentence in WARMUP_TEXT:
        zeros_model.embed([sentence.split()], stateful=True, batch_size=1)
    reference = zeros_model.embed([SENTENCE], stateful=True, batch_size=1)[0]
    warm = Elmo(zeros_model.bilm, initial_state="warm").embed([SENTENCE])[0]
    np.testing.assert_allclose(warm, reference, rtol=0, atol=1e-6)
    assert float(np.abs(zeros_model.embed([SENTENCE])[0] - reference).max()) > 1e-3  # zeros is a different state


def test_canonical_state_shape_and_warmup_text(zeros_model):
    lstm = zeros_model.config.lstm
    state = canonical_state(zeros_model.bilm)
    assert state.h.shape == (2, lstm.n_layers, 1, lstm.projection_dim)
    assert state.c.shape == (2, lstm.n_layers, 1, lstm.dim)
    other = canonical_state(zeros_model.bilm, ["A different warm-up text ."])
    assert not np.array_equal(state.h.numpy(), other.h.numpy())
    with pytest.raises(ValueError, match="sentence 1 is empty"):
        canonical_state(zeros_model.bilm, ["fine .", "   "])
    with pytest.raises(ValueError, match="no sentences"):
        canonical_state(zeros_model.bilm, [])


def test_drift_is_zero_for_the_state_that_matches_the_context(zeros_model):
    context = [s.split() for s in WARMUP_TEXT]
    after_warmup = initial_state_drift(zeros_model, [SENTENCE], context)
    assert after_warmup["warm_max"] <= 1e-6 < after_warmup["zeros_max"]
    from_zeros = initial_state_drift(zeros_model, [SENTENCE], [])
    assert from_zeros["zeros_max"] <= 1e-6 < from_zeros["warm_max"]
    assert set(from_zeros) == {"zeros_max", "zeros_mean", "warm_max", "warm_mean"}


def test_drift_command_prints_the_table(tmp_path, capsys):
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join([*WARMUP_TEXT[:2], " ".join(SENTENCE), ""]), encoding="utf-8")
    drift_main(["--options", str(OPTIONS), "--weights", str(WEIGHTS), "--sentences", str(sentences), "--context", "2"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "1 sentences, each after 2 warm-up sentences in the same batch row"
    assert out[1] == "| initial state | max abs diff | mean abs diff |"
    assert [line.split("|")[1].strip() for line in out[3:]] == ["zeros", "warm"]
