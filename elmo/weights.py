"""Reading and writing the official ELMo weights file (bilm-tf ``dump_weights`` layout).

Datasets are addressed by name; every one the config needs must exist with its exact shape and finite values, and
every dataset of the file must be one the config needs (a file for 2 LSTM layers next to ``n_layers: 1`` is
refused, not truncated), otherwise a ``WeightsFormatError`` names the datasets. Because ``elmo.model`` holds
parameters in the file's layout, a dataset maps to exactly one tensor (transposed for the convolutions only), so
load -> save -> load is lossless.

The char CNN projection (``CNN_proj``) is the file's choice, not options.json's: it exists when the file has it.
bilm-tf omits it only when the filters sum to the projection size (F == P); AllenNLP writes it even then and always
applies it. Without it F must equal P (otherwise the file lacks a dataset).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator
from typing import BinaryIO

import h5py
import numpy as np
import torch

from elmo.config import ElmoConfig
from elmo.errors import ConfigError
from elmo.model import BiLm, CharEncoder


class WeightsFormatError(ConfigError):
    """A weights file is not HDF5, lacks a dataset the options require, has one they do not use, a dataset of the
    wrong shape or type, or NaN/inf values; the message names the file and the datasets."""


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
    if config.has_char_projection:
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


def _source_name(source: str | BinaryIO) -> str:
    """The path of a weights file (or the name of an open file object) for messages."""
    return source if isinstance(source, str) else str(getattr(source, "name", repr(source)))


def _dataset_names(f: h5py.File) -> list[str]:
    """Every dataset in the file, nested groups included, by full name."""
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _mismatch_hint(unused: list[str], config: ElmoConfig) -> str:
    """Which option most likely disagrees with the file, from the names of its unused datasets."""
    hints = []
    layers = {int(m.group(1)) for n in unused if (m := re.search(r"/Cell(\d+)/", n))}
    if layers:
        hints.append(f"the file has LSTM layer {max(layers)}, options.json says lstm.n_layers={config.lstm.n_layers}")
    highways = {int(m.group(1)) for n in unused if (m := re.match(r"CNN_high_(\d+)/", n))}
    if highways:
        hints.append(
            f"the file has highway layer {max(highways)}, options.json says char_cnn.n_highway="
            f"{config.char_cnn.n_highway}"
        )
    if any(n.startswith("CNN/") for n in unused):
        hints.append(f"the file has more CNN filters than the {len(config.char_cnn.filters)} of char_cnn.filters")
    if any(n.startswith("CNN_proj/") for n in unused):
        hints.append("the file has a CNN projection (CNN_proj) but the model was built without one")
    return f" ({'; '.join(hints)})" if hints else ""


def file_layout(f: h5py.File, config: ElmoConfig) -> ElmoConfig:
    """``config`` with ``char_projection`` decided by the open weights file: True when it has a ``CNN_proj``
    dataset or F != P (bilm-tf omits the projection only when F == P). A config that already decides it is
    returned as it is (and ``check_datasets`` then holds the file to it)."""
    if config.char_projection is not None:
        return config
    names = f["CNN_proj"].keys() if isinstance(f.get("CNN_proj"), h5py.Group) else ()
    projected = bool(names) or config.char_cnn.n_filters != config.lstm.projection_dim
    return dataclasses.replace(config, char_projection=projected)


def check_datasets(f: h5py.File, config: ElmoConfig, name: str) -> None:
    """Checks an open weights file against ``config``: every expected dataset present with its exact shape and a
    floating point type, and no dataset the config does not use; raises ``WeightsFormatError`` listing them all."""
    expected = expected_datasets(config)
    problems = []
    for dataset, shape in expected.items():
        if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
            problems.append(f"missing dataset {dataset!r} (expected shape {shape})")
        elif tuple(f[dataset].shape) != shape:
            problems.append(f"dataset {dataset!r} has shape {tuple(f[dataset].shape)}, expected {shape}")
        elif f[dataset].dtype.kind != "f":
            problems.append(f"dataset {dataset!r} has type {f[dataset].dtype}, expected floating point")
    unused = sorted(set(_dataset_names(f)) - set(expected))
    if unused:
        shown = ", ".join(repr(n) for n in unused[:8]) + (f" and {len(unused) - 8} more" if len(unused) > 8 else "")
        problems.append(f"{len(unused)} datasets the options do not use: {shown}{_mismatch_hint(unused, config)}")
    if problems:
        raise WeightsFormatError(f"weights file {name!r} does not match options: " + "; ".join(problems))


def check_finite(arrays: dict[str, np.ndarray], name: str) -> None:
    """Raises ``WeightsFormatError`` naming every dataset that holds NaN or inf, with how many such values."""
    problems = []
    for dataset, array in arrays.items():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            problems.append(f"dataset {dataset!r} holds {bad} non-finite values (NaN/inf)")
    if problems:
        raise WeightsFormatError(f"{name}: " + "; ".join(problems))


def load_weights(model: BiLm, source: str | BinaryIO) -> None:
    """Copies every dataset of an official weights file into ``model``.

    Checks first (``WeightsFormatError``, naming the file and datasets): names, shapes and types against
    ``model.config``, no unused dataset, and only finite values. The model is left untouched when a check fails.
    The file decides whether the char CNN is projected (``file_layout``): ``model.config`` becomes that decision
    and the char encoder is rebuilt when it was built the other way.
    """
    name = _source_name(source)
    with _open(source, "r") as f:
        config = file_layout(f, model.config)
        check_datasets(f, config, name)
        arrays = {dataset: np.asarray(f[dataset][...]) for dataset in expected_datasets(config)}
    check_finite(arrays, name)
    if config.has_char_projection != model.char_encoder.has_projection:
        like = model.char_encoder.char_embedding.weight
        model.char_encoder = CharEncoder(config).to(device=like.device, dtype=like.dtype)
    model.config = config
    with torch.no_grad():
        embedding = model.char_encoder.char_embedding.weight
        embedding.zero_()
        embedding[1:] = torch.from_numpy(arrays["char_embed"])
        for dataset, param, is_conv in _bindings(model):
            value = torch.from_numpy(arrays[dataset])
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
