"""Length-sorted batches within a weight budget, with the sorting buffer bounded.

Beam's ``SortAndBatchElements`` sorts a whole bundle in ``finish_bundle``. Flink's batch runner makes a whole
partition one bundle, so a worker would hold its share of the corpus in the sort buffer and embed nothing before
the partition's last window arrived. Here at most ``BUFFER_BATCHES`` batches' weight is buffered: when the buffer
reaches it, it is sorted and cut, and buffering starts again. (On Flink the embedded outputs still wait in the SDK
worker until the bundle ends, since the runner reads them only then: docs/flink.md.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.transforms import window

BUFFER_BATCHES = 64  # batches' worth of weight sorted together: enough for well-filled length-sorted batches


def cut_sorted_batches(
    elements: list[Any], size_fn: Callable[[Any], int], max_batch_size: int, max_batch_weight: int
) -> list[list[Any]]:
    """``elements`` sorted by ``size_fn`` (stable), cut into batches of at most ``max_batch_size`` elements and at
    most ``max_batch_weight`` in total (inclusive); an element heavier than the budget goes alone."""
    batches: list[list[Any]] = []
    batch: list[Any] = []
    weight = 0
    for element in sorted(elements, key=size_fn):
        size = size_fn(element)
        if batch and (len(batch) >= max_batch_size or weight + size > max_batch_weight):
            batches.append(batch)
            batch, weight = [], 0
        batch.append(element)
        weight += size
    if batch:
        batches.append(batch)
    return batches


class _SortAndBatchFn(beam.DoFn):
    """Buffers elements up to ``BUFFER_BATCHES * max_batch_weight``, then emits them as sorted batches; the rest at
    the end of the bundle. Global window only (a batch pipeline)."""

    def __init__(self, size_fn: Callable[[Any], int], max_batch_size: int, max_batch_weight: int):
        self._size_fn = size_fn
        self._max_batch_size = max_batch_size
        self._max_batch_weight = max_batch_weight
        self._buffer: list[Any] = []
        self._weight = 0

    def start_bundle(self):
        self._buffer, self._weight = [], 0

    def process(self, element):
        self._buffer.append(element)
        self._weight += self._size_fn(element)
        if self._weight >= BUFFER_BATCHES * self._max_batch_weight:
            yield from self._cut()

    def finish_bundle(self):
        for batch in self._cut():
            yield window.GlobalWindows.windowed_value_at_end_of_window(batch)

    def _cut(self) -> list[list[Any]]:
        batches = cut_sorted_batches(self._buffer, self._size_fn, self._max_batch_size, self._max_batch_weight)
        self._buffer, self._weight = [], 0
        return batches


class SortAndBatchBounded(beam.PTransform):
    """PCollection[element] -> PCollection[list[element]]: length-sorted batches of at most ``max_batch_size``
    elements and ``max_batch_weight`` total ``element_size_fn`` (inclusive), sorting at most ``BUFFER_BATCHES``
    batches' weight at a time, so memory is bounded whatever the bundle size. Takes a ``ModelHandler``'s
    ``batch_elements_kwargs()`` (its other keys are ignored)."""

    def __init__(self, max_batch_size: int, max_batch_weight: int, element_size_fn: Callable[[Any], int], **_):
        super().__init__()
        if max_batch_size < 1 or max_batch_weight < 1:
            raise ValueError(
                f"need max_batch_size >= 1 and max_batch_weight >= 1, got {max_batch_size}, {max_batch_weight}"
            )
        self._fn = _SortAndBatchFn(element_size_fn, max_batch_size, max_batch_weight)

    def expand(self, pcoll):
        if not isinstance(pcoll.windowing.windowfn, window.GlobalWindows):
            raise ValueError("SortAndBatchBounded batches the global window only (a batch pipeline)")
        return pcoll | beam.ParDo(self._fn)
