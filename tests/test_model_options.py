"""Every option combination against the independent numpy oracle, plus clipping that really fires."""

from __future__ import annotations

import itertools

import h5py
import numpy as np
import pytest
import torch

from elmo import Elmo
from elmo.config import CharCNNConfig, ElmoConfig, LSTMConfig
from elmo.errors import ConfigError
from elmo.model import ClipCounter
from elmo.weights import WeightsFormatError
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


@pytest.mark.parametrize("with_projection", [True, False])
def test_filters_equal_to_projection_follow_the_weights_file(tmp_path, with_projection):
    """F == P: a file with ``CNN_proj`` (AllenNLP writes it and always applies it) is projected, a file without it
    (bilm-tf) is not; the options are the same, so only the weights file decides. Both match the oracle, which
    applies ``CNN_proj`` exactly when the file has it, and saving writes back what was read."""
    config = _config(True, 1, "relu", True, False, 2)  # F = P = 16
    config.char_projection = with_projection
    options, weights = write_random_model(tmp_path / "m", config, seed=5, lstm_scale=1.5)
    with h5py.File(weights, "r") as f:
        assert ("CNN_proj" in f) == with_projection
    model = Elmo.load(options, weights, dtype=torch.float64, initial_state="zeros")
    assert model.bilm.char_encoder.has_projection == with_projection
    assert model.config.has_char_projection == with_projection
    reference = ReferenceBiLm(options, weights)
    for sentence, got in zip(SENTENCES, model.embed(SENTENCES), strict=True):
        np.testing.assert_allclose(got, reference.embed(sentence)[0], rtol=0, atol=1e-9)
    token = model.embed([["bank"]])[0][0, 0, :16]  # layer 0, forward half: the char encoder's output
    unprojected = ReferenceBiLm(options, weights)
    unprojected.w.pop("CNN_proj/W_proj", None)
    unprojected.w.pop("CNN_proj/b_proj", None)
    skipped = np.abs(token - unprojected.token_vector("bank")).max()
    assert (skipped > 1e-3) == with_projection  # skipping the file's projection would really change the vectors

    model.save(tmp_path / "options.json", tmp_path / "weights.hdf5")
    with h5py.File(tmp_path / "weights.hdf5", "r") as f:
        assert ("CNN_proj" in f) == with_projection
    again = Elmo.load(tmp_path / "options.json", tmp_path / "weights.hdf5", dtype=torch.float64, initial_state="zeros")
    assert again.fingerprint == model.fingerprint
    np.testing.assert_array_equal(again.embed_sentence(SENTENCES[0]), model.embed_sentence(SENTENCES[0]))


def test_filters_other_than_projection_need_cnn_proj(tmp_path):
    config = _config(True, 1, "relu", True, True, 1)  # F = 16, P = 8
    options, weights = write_random_model(tmp_path, config)
    with h5py.File(weights, "a") as f:
        del f["CNN_proj"]
    with pytest.raises(WeightsFormatError, match="missing dataset 'CNN_proj/W_proj'"):
        Elmo.load(options, weights)
    with pytest.raises(ConfigError, match="needs the projection"):
        ElmoConfig(char_cnn=config.char_cnn, lstm=config.lstm, char_projection=False)
