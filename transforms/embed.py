"""Embedding windows through Beam's RunInference, in length-sorted batches bounded by a token budget."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.transforms.util import SortAndBatchElements

from transforms.model_handler import ElmoModelHandler
from transforms.records import SentenceWindow, exception_reason


def failed_batch_windows(bad: tuple) -> list[tuple[str, str]]:
    """RunInference's failed ``(batch, exception)`` -> ``(doc_id, reason)`` for every window of the batch."""
    batch, exc_info = bad  # exc_info: (type, repr, traceback lines), as with_exception_handling gives it
    reason = f"inference failed: {exception_reason(exc_info)}"
    return [(w.doc_id, reason) for w in batch]


def sort_and_batch(max_batch_size: int, max_batch_weight: int, element_size_fn, **_) -> SortAndBatchElements:
    """Beam's ``SortAndBatchElements`` for a ``ModelHandler``'s ``batch_elements_kwargs()``: per bundle, elements
    sorted by ``element_size_fn`` and cut into batches of at most ``max_batch_size`` elements and at most
    ``max_batch_weight`` in total (an element over the budget goes alone)."""
    return SortAndBatchElements(
        min_batch_size=1,
        max_batch_size=max_batch_size,
        # Beam closes a batch when the next element would bring it to max_batch_weight or more; + 1 keeps our
        # budget inclusive (a batch may hold exactly max_batch_tokens tokens, as before).
        max_batch_weight=max_batch_weight + 1,
        element_size_fn=element_size_fn,
    )


class EmbedWindows(beam.PTransform):
    """PCollection[SentenceWindow] -> (PCollection[WindowVectors], PCollection[tuple[str doc_id, str reason]]).

    Each bundle's windows are sorted by length and cut into batches within the handler's token budget by Beam's
    ``SortAndBatchElements`` (RunInference's own ``BatchElements`` does not sort, and its length buckets work only
    with ``max_batch_duration_secs``, i.e. stateful streaming batching), then run by RunInference with the handler
    (one model per process, shared by threads).
    A batch whose inference raises is dead-lettered window by window with the reason, never dropped.
    """

    def __init__(self, handler: ElmoModelHandler):
        super().__init__()
        self._handler = handler

    def expand(self, windows):
        batches = windows | "SortAndBatchByTokens" >> sort_and_batch(
            **self._handler.batch_elements_kwargs()
        ).with_input_types(SentenceWindow)
        embedded, dead = (
            batches | "RunInference" >> RunInference(self._handler.with_no_batching()).with_exception_handling()
        )
        failed = dead.failed_inferences | "FailedWindows" >> beam.FlatMap(failed_batch_windows)
        return embedded, failed
