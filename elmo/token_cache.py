"""A per-process cache of the char CNN's output: a token's layer-0 vector depends only on the token.

The char encoder is the most expensive part of the biLM on small shapes (60% of the time of the published ``small``
shape on real text, measured in issue 14), yet a corpus has few distinct tokens: its vocabulary saturates while its
tokens keep coming. ``TokenCache`` keeps the vectors of up to ``capacity`` distinct tokens (least recently used out
first) and encodes only the tokens it has not seen.

Cache misses are encoded in chunks of exactly ``chunk_rows`` tokens (the last chunk padded with copies of a row), so
every encoder call has the same shape and a token's vector has the same bits whatever tokens it was encoded with
(measured: a row's result of a fixed-shape GEMM does not depend on its position or its neighbours; a GEMM of another
row count may round differently). Hits, misses and evictions are counted for the pipeline's metrics.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from elmo.config import DEFAULT_TOKEN_CACHE_SIZE

DEFAULT_CAPACITY = DEFAULT_TOKEN_CACHE_SIZE
DEFAULT_CHUNK_ROWS = 64  # tokens per encoder call for cache misses


@dataclass
class CacheStats:
    """Counts since the cache was made (or since ``reset_stats``)."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0

    @property
    def hit_rate(self) -> float:
        """Share of distinct-token lookups answered from the cache (0 when nothing was looked up)."""
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0


def encode_in_chunks(
    encode: Callable[[torch.Tensor], torch.Tensor],
    char_ids: torch.Tensor,
    chunk_rows: int,
    classes: torch.Tensor | None = None,
) -> torch.Tensor:
    """``encode`` over ``char_ids`` (N >= 1, C) in calls of exactly ``chunk_rows`` rows -> (N, P).

    The last chunk is padded by repeating its last row; the padding's results are dropped. With ``classes`` (N,)
    bool (e.g. ``CharEncoder.short_rows``), each chunk holds rows of one class only, so that an encoder taking a
    different path per class sees the same chunk shape whatever the mix."""
    if classes is not None:
        out: torch.Tensor | None = None
        for members in (classes, ~classes):
            rows = members.nonzero().squeeze(1)
            if rows.numel():
                encoded = encode_in_chunks(encode, char_ids[rows], chunk_rows)
                if out is None:
                    out = encoded.new_empty(char_ids.shape[0], encoded.shape[1])
                out[rows] = encoded
        return out
    n = char_ids.shape[0]
    padded = -(-n // chunk_rows) * chunk_rows
    if padded != n:
        char_ids = torch.cat([char_ids, char_ids[-1:].expand(padded - n, -1)])
    pieces = [encode(char_ids[start : start + chunk_rows]) for start in range(0, padded, chunk_rows)]
    return torch.cat(pieces)[:n]


class TokenCache:
    """Layer-0 vectors of the distinct tokens seen, keyed by their char ids; thread-safe.

    ``capacity`` 0 keeps nothing but still encodes in fixed-size chunks (the bit-exact mode uses that)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, chunk_rows: int = DEFAULT_CHUNK_ROWS):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"token cache capacity must be an integer >= 0, not {capacity!r}")
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise ValueError(f"token cache chunk_rows must be an integer >= 1, not {chunk_rows!r}")
        self.capacity = capacity
        self.chunk_rows = chunk_rows
        self.stats = CacheStats()
        self._reported = CacheStats()  # stats at the last take_counts()
        self._slots: OrderedDict[bytes, int] = OrderedDict()  # char ids -> row of _vectors, least recent first
        self._vectors: torch.Tensor | None = None  # (capacity, P), made on first use on the encoder's device/dtype
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._slots)

    def clear(self) -> None:
        """Forgets every cached vector (the counts are kept)."""
        with self._lock:
            self._slots.clear()

    def take_counts(self) -> CacheStats:
        """The counts since the previous call (for metrics that add deltas), then starts a new period."""
        with self._lock:
            taken = CacheStats(
                self.stats.hits - self._reported.hits,
                self.stats.misses - self._reported.misses,
                self.stats.evictions - self._reported.evictions,
            )
            self._reported = CacheStats(self.stats.hits, self.stats.misses, self.stats.evictions)
        return taken

    def reset_stats(self) -> None:
        """Starts the hit/miss/eviction counts from zero."""
        with self._lock:
            self.stats = CacheStats()
            self._reported = CacheStats()

    def encode(
        self,
        encode: Callable[[torch.Tensor], torch.Tensor],
        unique_ids: torch.Tensor,
        classify: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Vectors of distinct tokens: ``unique_ids`` (U, C) int64, rows all different -> (U, P).

        Rows found in the cache are copied from it; the others go through ``encode`` in fixed-size chunks (of one
        ``classify`` class each, when given: ``encode_in_chunks``) and are stored, evicting the least recently used
        when full."""
        keys = [row.tobytes() for row in unique_ids.to(torch.int16).cpu().numpy()]
        with self._lock:
            found = [self._slots.get(key) for key in keys]
            missing = [u for u, slot in enumerate(found) if slot is None]
            for key, slot in zip(keys, found, strict=True):
                if slot is not None:
                    self._slots.move_to_end(key)
            self.stats.hits += len(keys) - len(missing)
            self.stats.misses += len(missing)
            computed = None
            if missing:
                misses = unique_ids[missing]
                classes = classify(misses) if classify is not None else None
                computed = encode_in_chunks(encode, misses, self.chunk_rows, classes)
            reference = computed if computed is not None else self._vectors
            out = reference.new_empty(len(keys), reference.shape[-1])  # (U, P)
            hits = [u for u, slot in enumerate(found) if slot is not None]
            if hits:
                out[hits] = self._vectors[[found[u] for u in hits]]
            if missing:
                out[missing] = computed
                self._store([keys[u] for u in missing], computed)
        return out

    def _store(self, keys: list[bytes], vectors: torch.Tensor) -> None:
        """Puts new rows in free slots, then in the least recently used ones (caller holds the lock)."""
        if self.capacity == 0:
            return
        if self._vectors is None or self._vectors.dtype != vectors.dtype or self._vectors.device != vectors.device:
            self._vectors = vectors.new_empty(self.capacity, vectors.shape[-1])
            self._slots.clear()
        keys, vectors = keys[-self.capacity :], vectors[-self.capacity :]  # more new rows than slots: keep the last
        slots = []
        for key in keys:
            if len(self._slots) < self.capacity:
                slot = len(self._slots)
            else:
                _, slot = self._slots.popitem(last=False)
                self.stats.evictions += 1
            self._slots[key] = slot
            slots.append(slot)
        self._vectors[slots] = vectors
