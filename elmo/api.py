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

import os
import tempfile
from collections.abc import Sequence

import numpy as np
import torch

from elmo import storage
from elmo.chars import batch_to_ids
from elmo.config import ElmoConfig
from elmo.mix import LayerChoice, apply_layer_choice
from elmo.model import BiLm, BiLmState
from elmo.weights import fingerprint, load_weights, save_weights

INITIAL_STATES = ("warm", "zeros")
MODEL_FILES = ("options.json", "weights.hdf5")
DEFAULT_INITIAL_STATE = "warm"  # measured closer to a warmed-up stateful run than zeros (README, elmo.state)


class Elmo:
    """A loaded biLM ready to embed sentences (lists of tokens)."""

    def __init__(self, bilm: BiLm, initial_state: str = DEFAULT_INITIAL_STATE, device: str | torch.device = "cpu"):
        if initial_state not in INITIAL_STATES:
            raise ValueError(f"initial_state must be one of {INITIAL_STATES}, not {initial_state!r}")
        self.device = torch.device(device)
        self.bilm = bilm.to(self.device).eval().requires_grad_(False)
        self.config = bilm.config
        self.initial_state_name = initial_state
        self._fixed_state: BiLmState | None = None  # (2, L, 1, ·) when "warm"
        self._stateful_state: BiLmState | None = None
        if initial_state == "warm":
            from elmo.state import canonical_state

            self._fixed_state = canonical_state(self)

    @classmethod
    def load(
        cls,
        options: str | os.PathLike,
        weights: str | os.PathLike,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        initial_state: str = DEFAULT_INITIAL_STATE,
    ) -> Elmo:
        """Loads ``options.json`` + weights ``.hdf5`` onto ``device`` ("cpu", "cuda", "cuda:1").

        Each may be a local path or a ``gs://`` / ``s3://`` URL (fetched once into the local model cache,
        ``elmo.storage``)."""
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} was asked for but CUDA is not available")
        config = ElmoConfig.from_json(storage.local_file(options))
        bilm = BiLm(config)
        load_weights(bilm, storage.local_file(weights))
        return cls(bilm.to(dtype), initial_state=initial_state, device=device)

    @classmethod
    def from_directory(cls, model_dir: str | os.PathLike, **kwargs) -> Elmo:
        """Loads a model directory (local, ``gs://`` or ``s3://``) holding ``options.json`` and ``weights.hdf5``."""
        local = storage.cached_files(model_dir, MODEL_FILES)
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
        """One batch through the biLM: -> layers (L+1, B, T_max, 2P) and token mask (B, T_max)."""
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

        Shapes: (L+1, T, 2P) for ``all``, (T, 2P) for ``top``, ``average`` or mix weights. An empty sentence gives
        T = 0. In the default mode sentences are batched by length for speed (results do not depend on it); with
        ``stateful`` they are batched in the given order, ``batch_size`` at a time, like the original command.
        """
        choice = layers if isinstance(layers, LayerChoice) else LayerChoice.parse(layers)
        order = list(range(len(sentences)))
        if not stateful:
            order.sort(key=lambda i: len(sentences[i]))
        results: list[np.ndarray | None] = [None] * len(sentences)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = [list(sentences[i]) for i in chunk]
            output, _ = self.embed_batch_tensor(batch, stateful=stateful)
            if output.dtype not in (torch.float32, torch.float64):
                output = output.to(torch.float32)  # half precision models give float32 arrays
            output = output.cpu().numpy()  # (L+1, B, T_max, 2P)
            for row, index in enumerate(chunk):
                n = len(batch[row])
                results[index] = apply_layer_choice(np.ascontiguousarray(output[:, row, :n]), choice)
        return results  # type: ignore[return-value]

    def embed_sentence(self, tokens: Sequence[str], layers: str | LayerChoice = "all") -> np.ndarray:
        """Embeds one sentence: (L+1, T, 2P) for ``all``."""
        return self.embed([tokens], layers=layers)[0]
