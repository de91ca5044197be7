"""The shipped English model separates word senses in its contextual layers; layer 0 cannot."""

from __future__ import annotations

import numpy as np
import pytest

from elmo import Elmo
from elmo.model_dir import default_model_dir
from elmo.polysemy import collect, nearest_neighbour_accuracy

MODEL_DIR = default_model_dir()
CHANCE = 7 / 15  # leave-one-out among 8 + 8 occurrences


@pytest.fixture(scope="module")
def occurrences():
    return collect(Elmo.from_directory(MODEL_DIR))


def test_layer0_is_at_chance(occurrences):
    accuracy = nearest_neighbour_accuracy(occurrences, 0)
    assert all(abs(a - CHANCE) < 1e-9 for a in accuracy.values()), accuracy


@pytest.mark.parametrize("layer", [1, 2])
def test_contextual_layers_separate_senses(occurrences, layer):
    accuracy = nearest_neighbour_accuracy(occurrences, layer)
    # Measured for the shipped model: 0.64 (layer 1), 0.62 (layer 2); clear for apple and bank, chance for bat
    # and plant (MODEL_CARD.md). The bar is "clearly above chance" on average and strong on at least one word.
    assert np.mean(list(accuracy.values())) >= 0.6, accuracy
    assert max(accuracy.values()) >= 0.75, accuracy
