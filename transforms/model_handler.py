"""RunInference's ``ModelHandler`` for the ELMo biLM: loads the model once per worker process and embeds padded,
length-sorted batches of token windows."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from apache_beam.ml.inference.base import ModelHandler

from elmo import Elmo, LayerChoice
from elmo.config import DEFAULT_TOKEN_CACHE_SIZE
from elmo.model_dir import MODEL_FILES
from transforms.files import localize_directory
from transforms.gpu import check_device
from transforms.metrics import counter
from transforms.records import SentenceWindow, WindowVectors

PROGRESS_EVERY_S = 10.0
_LOG = logging.getLogger(__name__)


def window_tokens(window: SentenceWindow) -> int:
    """A window's weight in a batch: its token count (the batch budget is in tokens, not in sentences)."""
    return len(window.tokens)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other values are kept."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class _Progress:
    """Per-process totals behind the periodic progress log line (shared by the threads of a worker process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.last_log = self.started
        self.windows = self.tokens = self.slots = 0

    def add(self, windows: int, tokens: int, slots: int) -> None:
        with self.lock:
            self.windows += windows
            self.tokens += tokens
            self.slots += slots
            now = time.monotonic()
            if now - self.last_log < PROGRESS_EVERY_S:
                return
            self.last_log = now
            rate = self.tokens / max(now - self.started, 1e-9)
            _LOG.info(
                "ELMo progress (this worker process): %d windows, %d tokens embedded, %.0f tokens/s, padding %.1f%%",
                self.windows,
                self.tokens,
                rate,
                100.0 * (1 - self.tokens / max(self.slots, 1)),
            )


_PROGRESS = _Progress()


class ElmoModelHandler(ModelHandler[SentenceWindow, WindowVectors, Elmo]):
    """SentenceWindow batches -> WindowVectors, through one ``Elmo`` per worker process.

    The stock PyTorch handler stacks inputs and cannot take sentences of different lengths; this one hands the
    token lists to ``Elmo.embed``, which pads them (char ids, mask) into one (B, T_max) forward pass. Batches are
    bounded by a token budget: ``max_batch_tokens``/``max_batch_windows`` become Beam's ``ModelHandler`` arguments
    ``max_batch_weight`` (with ``element_size_fn`` = tokens per window) and ``max_batch_size``.
    ``batch_invariant`` runs the biLM's bit-exact arithmetic (every GEMM on fixed-size row chunks), so that a
    window's vectors are bit-identical whatever batch, bundle or worker it lands in (float rounding of a padded batch
    otherwise differs by ~1e-7). ``token_cache_size``: distinct tokens whose char-CNN vectors the worker process
    keeps (hit/miss counters ``token_cache_hits``/``token_cache_misses``). ``bf16``: bfloat16 GEMMs (refused at
    load where slower than float32).
    ``large_model``/``model_copies`` share the model across the SDK processes of a worker (for GPUs).
    """

    def __init__(
        self,
        model_dir: str,
        layers: str = "average",
        device: str = "auto",
        max_batch_tokens: int = 2048,
        max_batch_windows: int = 512,
        expected_fingerprint: str | None = None,
        torch_threads: int = 1,
        batch_invariant: bool = False,
        token_cache_size: int = DEFAULT_TOKEN_CACHE_SIZE,
        bf16: bool = False,
        large_model: bool = False,
        model_copies: int | None = None,
    ):
        if max_batch_tokens < 1 or max_batch_windows < 1:
            raise ValueError(f"max_batch_tokens/max_batch_windows must be >= 1: {max_batch_tokens}/{max_batch_windows}")
        if token_cache_size < 0:
            raise ValueError(f"token_cache_size must be >= 0, got {token_cache_size}")
        if model_copies is not None and model_copies < 1:
            raise ValueError(f"model_copies must be >= 1, got {model_copies}")
        # Beam's own batching and sharing settings (ModelHandler, 2.72+): batch_elements_kwargs() hands the first
        # three to EmbedWindows' SortAndBatchBounded; large_model/model_copies drive share_model_across_processes()
        # and model_copies() (Beam's multi_process_shared).
        super().__init__(
            max_batch_size=max_batch_windows,
            max_batch_weight=max_batch_tokens,
            element_size_fn=window_tokens,
            large_model=large_model,
            model_copies=model_copies,
        )
        self._model_dir = model_dir
        self._layers = str(LayerChoice.parse(layers))  # validates early; kept as text (cheap to pickle)
        self._device = device
        self._expected_fingerprint = expected_fingerprint
        self._torch_threads = torch_threads
        self._batch_invariant = batch_invariant
        self._token_cache_size = token_cache_size
        self._bf16 = bf16
        self._cache_hits = counter("token_cache_hits")
        self._cache_misses = counter("token_cache_misses")
        self._cache_evictions = counter("token_cache_evictions")
        self._padding_slots = counter("padding_token_slots")
        self._batch_slots = counter("batch_token_slots")
        self._batches = counter("batches")

    def load_model(self) -> Elmo:
        """Loads options.json + weights.hdf5 (copied locally first when remote) onto the resolved device.

        ``torch_threads`` (> 0) sets torch's intra-op threads of the process that holds the model.
        """
        if self._torch_threads:
            torch.set_num_threads(self._torch_threads)
        device = check_device(resolve_device(self._device))  # a job that asked for a GPU stops here without one
        local = localize_directory(self._model_dir, MODEL_FILES)
        model = Elmo.from_directory(
            local,
            device=device,
            token_cache_size=self._token_cache_size,
            bit_exact=self._batch_invariant,
            bf16=self._bf16,
        )
        if self._expected_fingerprint and model.fingerprint != self._expected_fingerprint:
            raise RuntimeError(
                f"model in {self._model_dir} has fingerprint {model.fingerprint}, "
                f"the job was launched for {self._expected_fingerprint}"
            )
        model.bilm.requires_grad_(False)  # needed to share it across processes (large_model / model_copies)
        return model

    def run_inference(
        self,
        batch: Sequence[SentenceWindow],
        model: Elmo,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[WindowVectors]:
        """One padded forward pass over the batch; the chosen layer mix is applied per window."""
        token_lists = [list(w.tokens) for w in batch]
        lengths = [len(t) for t in token_lists]
        outputs = model.embed(token_lists, layers=self._layers, batch_size=max(len(batch), 1))
        slots = len(lengths) * max(lengths, default=0)  # positions of the padded (B, T_max) batch
        self._batches.inc()
        self._batch_slots.inc(slots)
        self._padding_slots.inc(slots - sum(lengths))
        counts = model.take_cache_counts()  # a method call: also works on a model shared across processes
        self._cache_hits.inc(counts.hits)
        self._cache_misses.inc(counts.misses)
        self._cache_evictions.inc(counts.evictions)
        _PROGRESS.add(len(batch), sum(lengths), slots)
        return [
            WindowVectors(w.doc_id, w.sentence_index, w.window_index, vectors, w.sentence_windows)
            for w, vectors in zip(batch, outputs, strict=True)
        ]

    def get_num_bytes(self, batch: Sequence[SentenceWindow]) -> int:
        """Input size for RunInference's byte metric: the UTF-8 bytes of the tokens."""
        return sum(len(t.encode("utf-8")) for w in batch for t in w.tokens)

    def get_metrics_namespace(self) -> str:
        """RunInference's own metrics (num_inferences, latencies, model load time) go under this namespace."""
        return "ElmoRunInference"
