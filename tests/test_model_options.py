"""Every option combination against the independent numpy oracle, plus clipping that really fires."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from elmo import Elmo
from elmo.config import CharCNNConfig, ElmoConfig, LSTMConfig
from elmo.model import ClipCounter
from tests.model_files import write_random_model
from tests.reference_bilm import ReferenceBiLm

SENTENCES = [
    ["The", "bank", "raised", "rates", "."],
    ["Zoë", "ate", "an", "apple", "—", "délicieux", "!", "🍎"],
    ["a" * 70],  # longer than 48 bytes: truncated chars
]


def _config(skip: bool, n_highway: int, activation: str, clip: bool, project: bool, n_layers: int) -> ElmoConfig:
    filters = [[1, 4], [2, 4], [3, 8]]  # F = 16
    return ElmoConfig(
        char_cnn=CharCNNConfig(embedding_dim=4, filters=filters, n_highway=n_highway, activation=activation),
        lstm=LSTMConfig(
            dim=12,
            projection_dim=8 if project else 16,
            n_layers=n_layers,
            cell_clip=3 if clip else None,
            proj_clip=3 if clip else None,
            use_skip_connections=skip,
        ),
    )


COMBINATIONS = list(
    itertools.product([True, False], [0, 1, 2], ["relu", "tanh"], [True, False], [True, False], [1, 2, 3])
)


@pytest.mark.parametrize(("skip", "n_highway", "activation", "clip", "project", "n_layers"), COMBINATIONS)
def test_matches_reference_for_every_option_combination(tmp_path, skip, n_highway, activation, clip, project, n_layers):
    config = _config(skip, n_highway, activation, clip, project, n_layers)
    options, weights = write_random_model(tmp_path, config, seed=len(tmp_path.name), lstm_scale=1.5)
    model = Elmo.load(options, weights, dtype=torch.float64, initial_state="zeros")
    reference = ReferenceBiLm(options, weights)
    ours = model.embed(SENTENCES, batch_size=3)  # one padded batch of different lengths
    for sentence, got in zip(SENTENCES, ours, strict=True):
        expected, _ = reference.embed(sentence)
        assert got.shape == (n_layers + 1, len(sentence), config.output_dim)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_clipping_fires_and_matters(tmp_path):
    config = _config(True, 2, "relu", True, True, 2)
    options, weights = write_random_model(tmp_path / "m", config, seed=7, lstm_scale=2.0)
    model = Elmo.load(options, weights, dtype=torch.float64, initial_state="zeros")
    model.bilm.clip_counter = counter = ClipCounter()
    clipped = model.embed(SENTENCES)
    assert counter.cell_clipped / counter.cell_total > 0.05, vars(counter)
    assert counter.proj_clipped / counter.proj_total > 0.01, vars(counter)
    # The same weights without clipping give clearly different vectors: clipping is not optional.
    unclipped_config = _config(True, 2, "relu", False, True, 2)
    options2, weights2 = write_random_model(tmp_path / "n", unclipped_config, seed=7, lstm_scale=2.0)
    unclipped = Elmo.load(options2, weights2, dtype=torch.float64, initial_state="zeros").embed(SENTENCES)
    assert max(np.abs(a - b).max() for a, b in zip(clipped, unclipped, strict=True)) > 0.1
    # And the reference (which clips) agrees with the clipped run.
    reference = ReferenceBiLm(options, weights)
    for sentence, got in zip(SENTENCES, clipped, strict=True):
        np.testing.assert_allclose(got, reference.embed(sentence)[0], atol=1e-9)


def test_stateful_carry_matches_reference(tmp_path):
    """Batches of one sentence, state carried: equals the oracle continuing from its own final state."""
    options, weights = write_random_model(tmp_path, _config(True, 1, "relu", True, True, 2), seed=3, lstm_scale=1.5)
    model = Elmo.load(options, weights, dtype=torch.float64, initial_state="zeros")
    reference = ReferenceBiLm(options, weights)
    state = None
    for sentence in SENTENCES:
        got = model.embed([sentence], stateful=True, batch_size=1)[0]
        expected, state = reference.embed(sentence, state)
        np.testing.assert_allclose(got, expected, atol=1e-9)


def test_empty_sentence_is_refused_with_its_index(tmp_path):
    options, weights = write_random_model(tmp_path, _config(True, 1, "relu", True, True, 2))
    model = Elmo.load(options, weights)
    with pytest.raises(ValueError, match="sentence 2 is empty"):
        model.embed([["word"], ["two", "words"], []])
    assert model.embed([]) == []
