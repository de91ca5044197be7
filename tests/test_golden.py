"""Parity with the original TensorFlow biLM: the golden fixtures, reproduced statefully batch by batch."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from elmo import Elmo
from tests.conftest import GOLDEN, golden_batches


def _golden_top_layer(directory, row: int, batch: int) -> np.ndarray:
    """The fixture's (2, T, P) top layer for row ``row`` of batch ``batch``."""
    with h5py.File(directory / f"lm_embeddings_{row}.hdf5", "r") as f:
        return f[str(batch)][...]


def test_stateful_mode_reproduces_tensorflow_golden_outputs(golden_model):
    name, directory = golden_model
    model = Elmo.load(directory / "options.json", directory / "lm_weights.hdf5")
    proj = model.config.lstm.projection_dim
    worst = 0.0
    for index, batch in enumerate(golden_batches(name)):
        outputs = model.embed(batch, stateful=True, batch_size=3)
        for row, layers in enumerate(outputs):
            top = layers[-1]  # (T, 2P)
            ours = np.stack([top[:, :proj], top[:, proj:]])  # (2, T, P)
            golden = _golden_top_layer(directory, row, index)
            assert ours.shape == golden.shape
            worst = max(worst, float(np.abs(ours - golden).max()))
    assert worst <= 1e-5, f"{name}: max |diff| {worst}"


def test_golden_outputs_need_the_carried_state(golden_model):
    """Batch 1 from zero state differs from the golden output: the carried state is really exercised."""
    name, directory = golden_model
    model = Elmo.load(directory / "options.json", directory / "lm_weights.hdf5")
    proj = model.config.lstm.projection_dim
    top = model.embed(golden_batches(name)[1])[0][-1]
    ours = np.stack([top[:, :proj], top[:, proj:]])
    assert np.abs(ours - _golden_top_layer(directory, 0, 1)).max() > 1e-3


@pytest.mark.parametrize("batch_size", [1, 3])
def test_stateful_state_is_per_batch_row(batch_size):
    """With batch size 1 every sentence continues from the previous sentence's final state."""
    directory = GOLDEN / "skip"
    model = Elmo.load(directory / "options.json", directory / "lm_weights.hdf5")
    sentences = [s for batch in golden_batches("skip")[:2] for s in batch]
    stateful = model.embed(sentences, stateful=True, batch_size=batch_size)
    model.reset_state()
    again = model.embed(sentences, stateful=True, batch_size=batch_size)
    for a, b in zip(stateful, again, strict=True):
        np.testing.assert_array_equal(a, b)
    zero = Elmo(model.bilm, initial_state="zeros").embed(sentences[:batch_size])
    for a, b in zip(stateful[:batch_size], zero, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)  # the first batch starts from zeros
