"""Default mode: a sentence's vectors do not depend on batch size, composition or order."""

from __future__ import annotations

import random

import numpy as np
import pytest

from elmo import Elmo
from elmo.config import CharCNNConfig, ElmoConfig, LSTMConfig
from elmo.state import canonical_state
from tests.conftest import GOLDEN, golden_batches
from tests.model_files import write_random_model


def _random_sentences(n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    words = [w for batch in golden_batches("skip") for s in batch for w in s]
    return [[rng.choice(words) for _ in range(rng.randint(1, 40))] for _ in range(n)]


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory) -> Elmo:
    """A random model wide enough for GEMM rounding to show (P=64, D=256), with clipping active.

    LSTM weights of std 0.15 keep the dynamics contractive like a trained biLM; much larger random weights make
    the recurrence chaotic, and then float32 rounding differences (1e-7) grow without bound along a sentence.
    """
    config = ElmoConfig(
        char_cnn=CharCNNConfig(embedding_dim=8, filters=[[1, 32], [2, 32], [3, 64], [4, 128]], n_highway=2),
        lstm=LSTMConfig(dim=256, projection_dim=64, n_layers=2, cell_clip=3, proj_clip=3),
    )
    options, weights = write_random_model(
        tmp_path_factory.mktemp("wide"), config, seed=11, lstm_scale=0.15, cnn_scale=0.3
    )
    return Elmo.load(options, weights)


@pytest.mark.parametrize("initial_state", ["zeros", "warm"])
@pytest.mark.parametrize("which", ["golden", "wide"])
def test_alone_equals_inside_shuffled_batch_of_64(which, initial_state, wide_model):
    if which == "golden":
        model = Elmo.load(
            GOLDEN / "skip" / "options.json", GOLDEN / "skip" / "lm_weights.hdf5", initial_state=initial_state
        )
    else:
        model = Elmo(wide_model.bilm, initial_state=initial_state)
    batch = _random_sentences(64, seed=5)
    random.Random(1).shuffle(batch)
    together = model.embed(batch, batch_size=64)
    worst = 0.0
    for sentence, in_batch in zip(batch[:12], together[:12], strict=True):
        alone = model.embed([sentence], batch_size=1)[0]
        worst = max(worst, float(np.abs(alone - in_batch).max()))
    assert worst <= 1e-4, worst
    # Order and batch size do not matter either.
    reordered = model.embed(batch[::-1], batch_size=7)[::-1]
    assert max(float(np.abs(a - b).max()) for a, b in zip(together, reordered, strict=True)) <= 1e-4
    # The same call twice is bit-identical.
    again = model.embed(batch, batch_size=64)
    assert all(np.array_equal(a, b) for a, b in zip(together, again, strict=True))


def test_warm_state_differs_from_zeros_and_is_deterministic(wide_model):
    warm1 = Elmo(wide_model.bilm, initial_state="warm")
    warm2 = Elmo(wide_model.bilm, initial_state="warm")
    assert float(canonical_state(wide_model.bilm).h.abs().max()) > 0
    sentence = ["the", "bank", "of", "the", "river"]
    a, b = warm1.embed_sentence(sentence), warm2.embed_sentence(sentence)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - Elmo(wide_model.bilm, initial_state="zeros").embed_sentence(sentence)).max() > 1e-4
