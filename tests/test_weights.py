"""The official weights layout: clear errors, lossless round trips, and the four published shapes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from elmo import Elmo, published_config
from elmo.config import ElmoConfig
from elmo.model import BiLm
from elmo.weights import WeightsFormatError, expected_datasets, load_weights
from tests.conftest import GOLDEN

# Parameter counts (softmax excluded) of the published models, from allennlp.org/elmo and the format spec.
PUBLISHED_PARAMS = {"small": 13_593_296, "medium": 28_027_728, "original": 93_600_848, "original_5.5B": 93_600_848}


def _copy_without(src, dst, drop: str | None = None, reshape: str | None = None) -> None:
    with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:

        def copy(name, obj):
            if isinstance(obj, h5py.Dataset) and name != drop:
                data = obj[...]
                fout.create_dataset(name, data=data[..., :-1] if name == reshape else data)

        fin.visititems(copy)


def test_missing_dataset_is_named(tmp_path):
    name = "RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_P_0"
    _copy_without(GOLDEN / "skip" / "lm_weights.hdf5", tmp_path / "w.hdf5", drop=name)
    with pytest.raises(WeightsFormatError, match=f"missing dataset '{name}'"):
        Elmo.load(GOLDEN / "skip" / "options.json", tmp_path / "w.hdf5")


def test_misshaped_dataset_is_named(tmp_path):
    _copy_without(GOLDEN / "skip" / "lm_weights.hdf5", tmp_path / "w.hdf5", reshape="CNN_high_1/W_carry")
    with pytest.raises(WeightsFormatError, match=r"'CNN_high_1/W_carry' has shape \(124, 123\), expected \(124, 124\)"):
        Elmo.load(GOLDEN / "skip" / "options.json", tmp_path / "w.hdf5")


def test_not_an_hdf5_file(tmp_path):
    (tmp_path / "w.hdf5").write_text("not hdf5")
    with pytest.raises(WeightsFormatError, match="cannot open weights file"):
        Elmo.load(GOLDEN / "skip" / "options.json", tmp_path / "w.hdf5")


@pytest.mark.parametrize("name", ["skip", "noskip"])
def test_load_save_load_is_lossless(tmp_path, name):
    model = Elmo.load(GOLDEN / name / "options.json", GOLDEN / name / "lm_weights.hdf5")
    model.save(tmp_path / "options.json", tmp_path / "weights.hdf5")
    again = Elmo.load(tmp_path / "options.json", tmp_path / "weights.hdf5")
    for (key, a), (key2, b) in zip(model.bilm.state_dict().items(), again.bilm.state_dict().items(), strict=True):
        assert key == key2
        assert torch.equal(a, b), key
    # The written file holds exactly the original datasets, bit for bit.
    with h5py.File(GOLDEN / name / "lm_weights.hdf5", "r") as f, h5py.File(tmp_path / "weights.hdf5", "r") as g:
        names = set(expected_datasets(model.config))
        assert names | {"char_embed"} == {n for n in _dataset_names(f)} == {n for n in _dataset_names(g)}
        for n in names:
            np.testing.assert_array_equal(f[n][...], g[n][...])
    assert model.fingerprint == again.fingerprint
    sentence = ["A", "round", "trip", "."]
    np.testing.assert_array_equal(model.embed_sentence(sentence), again.embed_sentence(sentence))


def _dataset_names(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    return names


def test_fingerprint_changes_with_a_weight(tmp_path):
    model = Elmo.load(GOLDEN / "skip" / "options.json", GOLDEN / "skip" / "lm_weights.hdf5")
    before = model.fingerprint
    with torch.no_grad():
        model.bilm.directions[1][1].projection[0, 0] += 1e-3
    assert model.fingerprint != before


def test_options_round_trip_every_field():
    text = (GOLDEN / "skip" / "options.json").read_text()
    import json

    original = json.loads(text)
    original["n_tokens_vocab"] = 793471  # a training-only field survives too
    original["unroll_steps"] = 20
    assert ElmoConfig.from_dict(original).to_dict() == original


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS))
def test_published_configurations_load_from_exact_shapes(tmp_path, name):
    config = published_config(name)
    path = tmp_path / "weights.hdf5"
    with h5py.File(path, "w") as f:  # datasets of the exact published shapes (zero-filled, stored lazily)
        for dataset, shape in expected_datasets(config).items():
            f.create_dataset(dataset, shape=shape, dtype="float32")
        f["CNN_proj/b_proj"][0] = 0.25  # one recognisable value
    model = BiLm(config)
    n_params = sum(p.numel() for p in model.parameters()) - model.char_encoder.char_embedding.weight[0].numel()
    assert n_params == PUBLISHED_PARAMS[name]
    load_weights(model, str(path))
    assert float(model.char_encoder.projection.bias[0].detach()) == 0.25
    assert model.config.output_dim == {"small": 256, "medium": 512}.get(name, 1024)
