"""The Python API: load a biLM, embed token lists, get the layers or a mix of them.

>>> from elmo import Elmo
>>> model = Elmo.load("options.json", "weights.hdf5")
>>> layers = model.embed([["The", "apple", "fell"], ["Apple", "sells", "phones"]])  # [(L+1, T, 2P), ...]
>>> top = model.embed(sentences, layers="top")                                        # [(T, 2P), ...]

Two state modes:

* default (deterministic): every sentence starts from one fixed initial LSTM state, so a sentence's vectors do not
  depend on batch size, batch composition or order (only float rounding of different GEMM shapes, <= 1e-4 in
  float32). The fixed state is ``warm`` (default): a canonical state computed once at load from a fixed warm-up
  text (see ``elmo.state``), or ``zeros``.
* ``stateful=True``: the original behaviour of bilm-tf and AllenNLP: each batch row starts from the final state
  of the same row in the previous batch (``reset_state()`` forgets it).
"""

from __future__ import annotations

import numbers
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from elmo import model_cache, storage
from elmo.bf16 import bf16_refusal
from elmo.chars import batch_to_ids
from elmo.config import ElmoConfig
from elmo.errors import ConfigError, ModelFilesError
from elmo.malloc import keep_freed_memory
from elmo.mix import LayerChoice, apply_layer_choice
from elmo.model import Arithmetic, BiLm, BiLmState
from elmo.model_dir import MODEL_FILES
from elmo.state import canonical_state
from elmo.token_cache import DEFAULT_CAPACITY, CacheStats, TokenCache
from elmo.weights import fingerprint, load_weights, save_weights

INITIAL_STATES = ("warm", "zeros")
DEFAULT_INITIAL_STATE = "warm"  # measured closer to a warmed-up stateful run than zeros (README, elmo.state)
DEVICE_TYPES = ("cpu", "cuda", "mps")
# Bit-exact mode: rows per LSTM step GEMM. Measured on the pipeline's length-sorted batches (bench_inference.py):
# smaller chunks waste less padding as rows finish, larger ones run the GEMM closer to its peak.
BIT_EXACT_ROWS = 32


def validate_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` this machine can use: ``cpu``, ``cuda``/``cuda:N`` (CUDA available and N
    below the device count) or ``mps`` (when available). Raises ``ConfigError`` naming the device otherwise."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device {device!r} is not a device name: use cpu, cuda or cuda:N") from None
    if parsed.type not in DEVICE_TYPES:
        raise ConfigError(f"device {device!r} is not supported: use cpu, cuda or cuda:N")
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {device!r} was asked for but CUDA is not available on this machine")
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(f"device {device!r} does not exist: this machine has {count} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} was asked for but MPS is not available on this machine")
    return parsed


def check_sentences(sentences: Iterable[Sequence[str]]) -> list[list[str]]:
    """Validates ``sentences`` (a list of token lists) and returns them as lists.

    Raises ``TypeError`` for a plain string, a sentence that is a string (a flat list of tokens that was not
    wrapped in a list) or a token that is not a string; ``ValueError`` naming the sentence (and token) index for
    an empty sentence or an empty token.
    """
    hint = "pass a list of sentences, each a list of token strings, e.g. [['The', 'cat', 'sat']]"
    if isinstance(sentences, (str, bytes)) or not isinstance(sentences, Iterable):
        raise TypeError(f"sentences must be a list of token lists, not {type(sentences).__name__}: {hint}")
    checked = []
    for i, sentence in enumerate(sentences):
        if isinstance(sentence, (str, bytes)) or not isinstance(sentence, Iterable):
            raise TypeError(
                f"sentence {i} is a {type(sentence).__name__}, not a list of tokens: {hint} "
                "(one sentence goes in a list of its own)"
            )
        tokens = list(sentence)
        if not tokens:
            raise ValueError(f"sentence {i} is empty: every sentence needs at least one token")
        for j, token in enumerate(tokens):
            if not isinstance(token, str):
                raise TypeError(f"sentence {i}, token {j} is a {type(token).__name__}, not a string: {hint}")
            if not token:
                raise ValueError(f"sentence {i}, token {j} is an empty string: tokens must be non-empty")
        checked.append(tokens)
    return checked


def _check_speed_settings(token_cache_size: int, device: torch.device, bf16: bool) -> None:
    """``ConfigError`` for a token cache size that is not an integer >= 0, or bf16 where it would be slower."""
    if isinstance(token_cache_size, bool) or not isinstance(token_cache_size, numbers.Integral) or token_cache_size < 0:
        raise ConfigError(f"token_cache_size must be an integer >= 0, not {token_cache_size!r}")
    if bf16:
        refusal = bf16_refusal(device)
        if refusal:
            raise ConfigError(f"bf16 refused: {refusal}; use float32")


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")


def _local_model_file(path: str | os.PathLike, what: str) -> str:
    """A local copy of a model file (``model_cache.local_file``); ``ModelFilesError`` naming it when it is missing."""
    path = os.fspath(path)
    if not storage.is_remote(path):
        if not os.path.exists(path):
            raise ModelFilesError(f"{what} {path} does not exist")
        if os.path.isdir(path):
            raise ModelFilesError(f"{what} {path} is a directory, not a file")
        return path
    try:
        return model_cache.local_file(path)
    except FileNotFoundError as err:
        raise ModelFilesError(f"{what} {path} does not exist ({err})") from None


def check_model_directory(model_dir: str | os.PathLike) -> None:
    """Raises ``ModelFilesError`` unless the local ``model_dir`` is a directory holding options.json and
    weights.hdf5 (the message names the directory and the missing files)."""
    model_dir = os.fspath(model_dir)
    if not os.path.exists(model_dir):
        raise ModelFilesError(f"model directory {model_dir} does not exist")
    if not os.path.isdir(model_dir):
        raise ModelFilesError(f"model directory {model_dir} is not a directory")
    missing = [name for name in MODEL_FILES if not os.path.isfile(os.path.join(model_dir, name))]
    if missing:
        raise ModelFilesError(f"{model_dir} has no {' and no '.join(missing)}")


class Elmo:
    """A loaded biLM ready to embed sentences (lists of tokens).

    ``token_cache_size``: distinct tokens whose layer-0 vectors are kept across batches (0: none; exact, see
    ``elmo.token_cache``). ``bit_exact``: every GEMM on fixed-size row chunks, so a sentence's vectors are the
    same bytes whatever batch it is embedded in. ``bf16``: bfloat16 GEMMs (cell state and outputs stay in the
    model's dtype); refused where it would be slower than float32 (``elmo.bf16``)."""

    def __init__(
        self,
        bilm: BiLm,
        initial_state: str = DEFAULT_INITIAL_STATE,
        device: str | torch.device = "cpu",
        token_cache_size: int = DEFAULT_CAPACITY,
        bit_exact: bool = False,
        bf16: bool = False,
    ):
        if initial_state not in INITIAL_STATES:
            raise ConfigError(f"initial_state must be one of {INITIAL_STATES}, not {initial_state!r}")
        self.device = validate_device(device)
        _check_speed_settings(token_cache_size, self.device, bf16)
        keep_freed_memory()  # large per-batch tensors reuse the heap instead of faulting pages in (elmo.malloc)
        self.bilm = bilm.to(self.device).eval().requires_grad_(False)
        self.bilm.share_pair_storage()
        self.bilm.token_cache = TokenCache(int(token_cache_size)) if token_cache_size else None
        self.bilm.arithmetic = Arithmetic(row_chunk=BIT_EXACT_ROWS if bit_exact else None, bf16=bf16)
        self.config = bilm.config
        self.initial_state_name = initial_state
        self._fixed_state: BiLmState | None = None  # (2, L, 1, ·) when "warm"
        self._stateful_state: BiLmState | None = None
        if initial_state == "warm":
            self._fixed_state = canonical_state(self.bilm)

    def take_cache_counts(self) -> CacheStats:
        """Token cache counts since the previous call (for metrics that add deltas; all zero without a cache)."""
        cache = self.bilm.token_cache
        return cache.take_counts() if cache is not None else CacheStats()

    @property
    def cache_stats(self) -> CacheStats:
        """Token cache hits, misses and evictions so far (all zero without a cache)."""
        cache = self.bilm.token_cache
        return cache.stats if cache is not None else CacheStats()

    @classmethod
    def load(
        cls,
        options: str | os.PathLike,
        weights: str | os.PathLike,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        initial_state: str = DEFAULT_INITIAL_STATE,
        **speed: Any,
    ) -> Elmo:
        """Loads ``options.json`` + weights ``.hdf5`` onto ``device`` ("cpu", "cuda", "cuda:1").

        Each may be a local path or a ``gs://`` / ``s3://`` URL (fetched once into the local model cache,
        ``elmo.storage``). Raises (all ``ConfigError``, naming the culprit, before reading the weights where they
        can): ``ModelFilesError`` for a missing file, ``OptionsError`` for a bad options.json,
        ``WeightsFormatError`` for weights that do not match it or hold NaN/inf, and for an unusable device, dtype
        or initial state. ``speed`` settings (``token_cache_size``, ``bit_exact``, ``bf16``): see ``Elmo``."""
        validate_device(device)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating point torch.dtype, not {dtype!r}")
        if initial_state not in INITIAL_STATES:
            raise ConfigError(f"initial_state must be one of {INITIAL_STATES}, not {initial_state!r}")
        config = ElmoConfig.from_json(_local_model_file(options, "options file"))
        bilm = BiLm(config)
        load_weights(bilm, _local_model_file(weights, "weights file"))
        return cls(bilm.to(dtype), initial_state=initial_state, device=device, **speed)

    @classmethod
    def from_directory(cls, model_dir: str | os.PathLike, **kwargs) -> Elmo:
        """Loads a model directory (local, ``gs://`` or ``s3://``) holding ``options.json`` and ``weights.hdf5``.

        A missing directory or file raises ``ModelFilesError`` ("model directory X does not exist", "X has no
        weights.hdf5"); see ``load`` for the rest."""
        model_dir = os.fspath(model_dir)
        if storage.is_remote(model_dir):
            try:
                local = model_cache.cached_files(model_dir, MODEL_FILES)
            except FileNotFoundError as err:
                raise ModelFilesError(f"model directory {model_dir} lacks {' or '.join(MODEL_FILES)}: {err}") from None
        else:
            check_model_directory(model_dir)
            local = model_dir
        return cls.load(os.path.join(local, "options.json"), os.path.join(local, "weights.hdf5"), **kwargs)

    def save(self, options_path: str | os.PathLike, weights_path: str | os.PathLike) -> None:
        """Writes the model back in the official layout (local paths or ``gs://`` / ``s3://`` URLs)."""
        storage.write_bytes(os.fspath(options_path), self.config.to_json().encode("utf-8"))
        if storage.is_remote(weights_path):
            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, "weights.hdf5")
                save_weights(self.bilm, local)
                storage.upload_file(local, os.fspath(weights_path))
        else:
            save_weights(self.bilm, os.fspath(weights_path))

    @property
    def fingerprint(self) -> str:
        """Hash of the options and weights (independent of file layout)."""
        return fingerprint(self.bilm)

    @property
    def dtype(self) -> torch.dtype:
        """Floating point type of the parameters."""
        return self.bilm.char_encoder.char_embedding.weight.dtype

    def reset_state(self) -> None:
        """Forgets the carried state of stateful mode."""
        self._stateful_state = None

    def _initial_state(self, batch_size: int, stateful: bool) -> BiLmState | None:
        if stateful:
            if self._stateful_state is None:
                return None
            return self._stateful_state.rows(batch_size)
        if self._fixed_state is None:
            return None
        return self._fixed_state.expand(batch_size)

    def _remember(self, final: BiLmState) -> None:
        """Stores a stateful batch's final state in rows [:B], keeping rows beyond B (bilm-tf semantics)."""
        held = self._stateful_state
        if held is None or held.batch_size <= final.batch_size:
            self._stateful_state = final
            return
        h, c = held.h.clone(), held.c.clone()
        h[:, :, : final.batch_size] = final.h
        c[:, :, : final.batch_size] = final.c
        self._stateful_state = BiLmState(h, c)

    @torch.no_grad()
    def embed_batch_tensor(
        self, sentences: Sequence[Sequence[str]], stateful: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch through the biLM: -> layers (L+1, B, T_max, 2P) and token mask (B, T_max).

        ``sentences`` are checked like ``embed``'s (``check_sentences``)."""
        sentences = check_sentences(sentences)
        ids = torch.from_numpy(batch_to_ids(sentences, self.config.char_cnn.max_characters_per_token))
        ids = ids.to(self.device)
        layers, final = self.bilm(ids, self._initial_state(len(sentences), stateful))
        if stateful:
            self._remember(final)
        return layers, (ids > 0).any(-1)

    def embed(
        self,
        sentences: Sequence[Sequence[str]],
        layers: str | LayerChoice = "all",
        batch_size: int = 64,
        stateful: bool = False,
    ) -> list[np.ndarray]:
        """Embeds sentences; returns one float array per sentence, in input order.

        Shapes: (L+1, T, 2P) for ``all``, (T, 2P) for ``top``, ``average`` or mix weights. In the default mode
        sentences are batched by length for speed (results do not depend on it); with ``stateful`` they are batched
        in the given order, ``batch_size`` at a time, like the original command. No sentences give ``[]``.

        Raises ``TypeError``/``ValueError`` before any work for malformed ``sentences`` (see ``check_sentences``:
        a plain string, an unwrapped sentence, an empty sentence or token), a ``batch_size`` that is not a positive
        integer, or a layer choice that is malformed, non-finite or has the wrong number of weights.
        """
        sentences = check_sentences(sentences)
        _check_batch_size(batch_size)
        choice = self.layer_choice(layers)
        order = list(range(len(sentences)))
        if not stateful:
            order.sort(key=lambda i: len(sentences[i]))
        results: list[np.ndarray | None] = [None] * len(sentences)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = [sentences[i] for i in chunk]
            output, _ = self.embed_batch_tensor(batch, stateful=stateful)
            if output.dtype not in (torch.float32, torch.float64):
                output = output.to(torch.float32)  # half precision models give float32 arrays
            output = output.cpu().numpy()  # (L+1, B, T_max, 2P)
            for row, index in enumerate(chunk):
                n = len(batch[row])
                results[index] = apply_layer_choice(np.ascontiguousarray(output[:, row, :n]), choice)
        return results  # type: ignore[return-value]

    def embed_sentence(self, tokens: Sequence[str], layers: str | LayerChoice = "all") -> np.ndarray:
        """Embeds one sentence (a list of token strings): (L+1, T, 2P) for ``all``."""
        if isinstance(tokens, (str, bytes)):
            raise TypeError("embed_sentence takes a list of token strings, not a string: e.g. ['The', 'cat', 'sat']")
        return self.embed([tokens], layers=layers)[0]

    def layer_choice(self, layers: str | LayerChoice) -> LayerChoice:
        """``layers`` as a ``LayerChoice`` checked against this model (mix weights: one per output layer)."""
        if isinstance(layers, str):
            layers = LayerChoice.parse(layers)
        if not isinstance(layers, LayerChoice):
            raise TypeError(f"layers must be all, top, average, mix weights or a LayerChoice, not {layers!r}")
        if layers.kind == "weights" and len(layers.weights) != self.config.n_output_layers:
            raise ConfigError(
                f"layer choice {layers} has {len(layers.weights)} mix weights; "
                f"the model has {self.config.n_output_layers} layers"
            )
        return layers
