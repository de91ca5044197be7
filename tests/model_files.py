"""Writes biLMs with random weights in the official options.json + hdf5 layout, for tests."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from elmo.config import ElmoConfig
from elmo.weights import expected_datasets

# bilm-tf's random-weight test model (2P = 32) as a model directory: options.json, weights.hdf5, tokenizer.json
TINY_MODEL = Path(__file__).resolve().parent / "fixtures" / "models" / "tiny"


def write_random_model(
    directory: Path, config: ElmoConfig, seed: int = 0, lstm_scale: float = 0.5, cnn_scale: float = 0.5
) -> tuple[str, str]:
    """Writes ``options.json`` and ``weights.hdf5`` with N(0, scale) weights; returns both paths.

    A large ``lstm_scale`` (>= 1) makes cell and projection clipping fire often.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    options = directory / "options.json"
    weights = directory / "weights.hdf5"
    options.write_text(json.dumps(config.to_dict()))
    with h5py.File(weights, "w") as f:
        for name, shape in expected_datasets(config).items():
            scale = lstm_scale if name.startswith("RNN_") else cnn_scale
            f.create_dataset(name, data=(rng.standard_normal(shape) * scale).astype(np.float32))
    return str(options), str(weights)
