"""Scalar mix and the published layer recipes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elmo.mix import LayerChoice, ScalarMix, apply_layer_choice, masked_layer_norm

RNG = np.random.default_rng(0)
LAYERS = RNG.standard_normal((3, 5, 8)).astype(np.float32)  # (L+1, T, 2P)


def test_recipes():
    np.testing.assert_array_equal(apply_layer_choice(LAYERS, LayerChoice("all")), LAYERS)
    np.testing.assert_array_equal(apply_layer_choice(LAYERS, LayerChoice("top")), LAYERS[2])
    np.testing.assert_allclose(
        apply_layer_choice(LAYERS, LayerChoice("average")), np.average(LAYERS, axis=0), atol=1e-6
    )
    # Equal pre-softmax weights = average; a dominant weight ~ that layer; gamma scales.
    np.testing.assert_allclose(apply_layer_choice(LAYERS, LayerChoice.parse("0,0,0")), LAYERS.mean(0), atol=1e-6)
    np.testing.assert_allclose(
        apply_layer_choice(LAYERS, LayerChoice.parse("-50,-50,50;gamma=2")), 2 * LAYERS[2], atol=1e-5
    )


def test_given_weights_match_trainable_scalar_mix():
    weights = (0.3, -1.2, 2.0)
    mix = ScalarMix(3, initial_weights=weights, trainable=False, gamma=0.7)
    got = mix(torch.from_numpy(LAYERS[:, None]))[0].numpy()  # batch of one
    np.testing.assert_allclose(got, apply_layer_choice(LAYERS, LayerChoice("weights", weights, 0.7)), atol=1e-6)
    assert not mix.weights.requires_grad


def test_layer_choice_parse_and_errors():
    assert str(LayerChoice.parse("1,2,3;gamma=0.5")) == "1.0,2.0,3.0;gamma=0.5"
    assert LayerChoice.parse("top").kind == "top"
    with pytest.raises(ValueError, match="neither"):
        LayerChoice.parse("middle")
    with pytest.raises(ValueError, match="2 mix weights given for 3 layers"):
        apply_layer_choice(LAYERS, LayerChoice.parse("1,2"))


def test_layer_norm_uses_one_mean_and_variance_over_unmasked_elements():
    x = torch.from_numpy(RNG.standard_normal((2, 4, 6)))  # (B, T, W)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    normed = masked_layer_norm(x, mask)
    valid = normed[mask]  # (5, W)
    assert abs(float(valid.mean())) < 1e-9
    assert abs(float(valid.var(unbiased=False)) - 1.0) < 1e-9
    # Padded positions do not move the statistics.
    x2 = x.clone()
    x2[~mask] = 1e6
    torch.testing.assert_close(masked_layer_norm(x2, mask)[mask], valid)
    mix = ScalarMix(1, do_layer_norm=True)
    torch.testing.assert_close(mix(x[None], mask)[mask], valid)
