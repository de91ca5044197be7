"""Reading and writing the official ELMo weights file (bilm-tf ``dump_weights`` layout).

Datasets are addressed by name; every one the config needs must exist with its exact shape, otherwise a
``WeightsFormatError`` names it. Because ``elmo.model`` holds parameters in the file's layout, a dataset maps to
exactly one tensor (transposed for the convolutions only), so load -> save -> load is lossless.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import BinaryIO

import h5py
import numpy as np
import torch

from elmo.config import ElmoConfig
from elmo.model import BiLm


class WeightsFormatError(ValueError):
    """A weights file lacks a dataset the options require, or a dataset has the wrong shape."""


def _lstm_prefix(direction: int, layer: int) -> str:
    return f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"


def expected_datasets(config: ElmoConfig) -> dict[str, tuple[int, ...]]:
    """Every dataset name of the weights file for ``config``, with its shape."""
    cnn, lstm = config.char_cnn, config.lstm
    n_filters, proj, dim = cnn.n_filters, lstm.projection_dim, lstm.dim
    shapes: dict[str, tuple[int, ...]] = {"char_embed": (261, cnn.embedding_dim)}
    for i, (width, count) in enumerate(cnn.filters):
        shapes[f"CNN/W_cnn_{i}"] = (1, width, cnn.embedding_dim, count)
        shapes[f"CNN/b_cnn_{i}"] = (count,)
    for k in range(cnn.n_highway):
        for part in ("transform", "carry"):
            shapes[f"CNN_high_{k}/W_{part}"] = (n_filters, n_filters)
            shapes[f"CNN_high_{k}/b_{part}"] = (n_filters,)
    if n_filters != proj:
        shapes["CNN_proj/W_proj"] = (n_filters, proj)
        shapes["CNN_proj/b_proj"] = (proj,)
    for direction in range(2):
        for layer in range(lstm.n_layers):
            prefix = _lstm_prefix(direction, layer)
            shapes[f"{prefix}/W_0"] = (2 * proj, 4 * dim)
            shapes[f"{prefix}/B"] = (4 * dim,)
            shapes[f"{prefix}/W_P_0"] = (dim, proj)
    return shapes


def _bindings(model: BiLm) -> Iterator[tuple[str, torch.Tensor, bool]]:
    """(dataset name, parameter, is_conv) for every dataset; conv kernels need a layout change."""
    enc = model.char_encoder
    n_filters = model.config.char_cnn.n_filters
    for i, conv in enumerate(enc.convolutions):
        yield f"CNN/W_cnn_{i}", conv.weight, True
        yield f"CNN/b_cnn_{i}", conv.bias, False
    for k, (kernel, bias) in enumerate(zip(enc.highway_kernels, enc.highway_biases, strict=True)):
        yield f"CNN_high_{k}/W_transform", kernel[:, :n_filters], False
        yield f"CNN_high_{k}/W_carry", kernel[:, n_filters:], False
        yield f"CNN_high_{k}/b_transform", bias[:n_filters], False
        yield f"CNN_high_{k}/b_carry", bias[n_filters:], False
    if enc.has_projection:
        yield "CNN_proj/W_proj", enc.projection.weight.T, False
        yield "CNN_proj/b_proj", enc.projection.bias, False
    for direction, layers in enumerate(model.directions):
        for index, layer in enumerate(layers):
            prefix = _lstm_prefix(direction, index)
            yield f"{prefix}/W_0", layer.kernel, False
            yield f"{prefix}/B", layer.bias, False
            yield f"{prefix}/W_P_0", layer.projection, False


def _open(source: str | BinaryIO, mode: str) -> h5py.File:
    try:
        return h5py.File(source, mode)
    except OSError as err:
        raise WeightsFormatError(f"cannot open weights file {source!r} as HDF5: {err}") from err


def load_weights(model: BiLm, source: str | BinaryIO) -> None:
    """Copies every dataset of an official weights file into ``model``; checks names and shapes first."""
    expected = expected_datasets(model.config)
    with _open(source, "r") as f:
        problems = []
        for name, shape in expected.items():
            if name not in f:
                problems.append(f"missing dataset {name!r} (expected shape {shape})")
            elif tuple(f[name].shape) != shape:
                problems.append(f"dataset {name!r} has shape {tuple(f[name].shape)}, expected {shape}")
        if problems:
            raise WeightsFormatError(f"weights file {source!r} does not match options: " + "; ".join(problems))
        arrays = {name: np.asarray(f[name][...]) for name in expected}
    with torch.no_grad():
        embedding = model.char_encoder.char_embedding.weight
        embedding.zero_()
        embedding[1:] = torch.from_numpy(arrays["char_embed"])
        for name, param, is_conv in _bindings(model):
            value = torch.from_numpy(arrays[name])
            if is_conv:
                value = value.squeeze(0).permute(2, 1, 0)  # (1, w, E, n) -> (n, E, w)
            param.copy_(value)


def save_weights(model: BiLm, target: str | BinaryIO) -> None:
    """Writes ``model`` in the official layout (float32), readable by AllenNLP and by ``load_weights``."""
    with _open(target, "w") as f, torch.no_grad():
        f.create_dataset("char_embed", data=_to_f32(model.char_encoder.char_embedding.weight[1:]))
        for name, param, is_conv in _bindings(model):
            value = param.permute(2, 1, 0).unsqueeze(0) if is_conv else param
            f.create_dataset(name, data=_to_f32(value))


def _to_f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().to(torch.float32).numpy())


def fingerprint(model: BiLm) -> str:
    """A stable model id: sha256 over the canonical options and every dataset's float32 bytes, by name.

    It does not depend on how the HDF5 file was laid out or when it was written (first 16 hex digits).
    """
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode("utf-8"))
    with torch.no_grad():
        datasets = {"char_embed": model.char_encoder.char_embedding.weight[1:]}
        datasets.update({name: param for name, param, _ in _bindings(model)})
        for name in sorted(datasets):
            digest.update(name.encode("utf-8"))
            digest.update(_to_f32(datasets[name]).tobytes())
    return digest.hexdigest()[:16]
