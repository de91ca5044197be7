"""Length-sorted batches under a token budget: each bundle's elements sorted by size and cut into batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue


def cut_sorted_batches(
    elements: Iterable[Any], size_fn: Callable[[Any], int], max_batch_size: int, max_batch_weight: int
) -> list[list[Any]]:
    """Sort ``elements`` by ``size_fn`` (stable) and cut them into consecutive batches.

    A batch holds at most ``max_batch_size`` elements and, unless a single element alone exceeds it, at most
    ``max_batch_weight`` in total size. Every element lands in exactly one batch.
    """
    if max_batch_size < 1 or max_batch_weight < 1:
        raise ValueError(f"max_batch_size and max_batch_weight must be >= 1, got {max_batch_size}, {max_batch_weight}")
    ordered = sorted(elements, key=size_fn)
    batches: list[list[Any]] = []
    batch: list[Any] = []
    weight = 0
    for element in ordered:
        size = size_fn(element)
        if batch and (len(batch) >= max_batch_size or weight + size > max_batch_weight):
            batches.append(batch)
            batch, weight = [], 0
        batch.append(element)
        weight += size
    if batch:
        batches.append(batch)
    return batches


class _SortAndBatchDoFn(beam.DoFn):
    """Buffers a bundle, then emits its elements as length-sorted batches (global window, batch pipelines)."""

    def __init__(self, size_fn: Callable[[Any], int], max_batch_size: int, max_batch_weight: int):
        self._size_fn = size_fn
        self._max_batch_size = max_batch_size
        self._max_batch_weight = max_batch_weight
        self._buffer: list[Any] = []

    def start_bundle(self):
        self._buffer = []

    def process(self, element):
        self._buffer.append(element)

    def finish_bundle(self):
        batches = cut_sorted_batches(self._buffer, self._size_fn, self._max_batch_size, self._max_batch_weight)
        self._buffer = []
        for batch in batches:
            yield WindowedValue(batch, GlobalWindow().max_timestamp(), [GlobalWindow()])


class SortAndBatchByWeight(beam.PTransform):
    """PCollection[T] -> PCollection[list[T]]: per bundle, sorted by ``size_fn`` and cut under a weight budget.

    Sorting first keeps similar lengths together, so padded batches waste little. Equivalent to the
    ``SortAndBatchElements`` of newer Beam releases, which the pinned Beam (chosen for its Flink runner) lacks.
    Global window only: the embedding job is a batch job.
    """

    def __init__(self, size_fn: Callable[[Any], int], max_batch_size: int, max_batch_weight: int):
        super().__init__()
        self._size_fn = size_fn
        self._max_batch_size = max_batch_size
        self._max_batch_weight = max_batch_weight

    def expand(self, pcoll):
        return pcoll | "SortAndBatch" >> beam.ParDo(
            _SortAndBatchDoFn(self._size_fn, self._max_batch_size, self._max_batch_weight)
        )
