"""Embedding windows through Beam's RunInference, in length-sorted batches bounded by a token budget."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from transforms.batching import SortAndBatchBounded
from transforms.model_handler import ElmoModelHandler
from transforms.records import SentenceWindow, exception_reason


def failed_batch_windows(bad: tuple) -> list[tuple[str, str]]:
    """RunInference's failed ``(batch, exception)`` -> ``(doc_id, reason)`` for every window of the batch."""
    batch, exc_info = bad  # exc_info: (type, repr, traceback lines), as with_exception_handling gives it
    reason = f"inference failed: {exception_reason(exc_info)}"
    return [(w.doc_id, reason) for w in batch]


class EmbedWindows(beam.PTransform):
    """PCollection[SentenceWindow] -> (PCollection[WindowVectors], PCollection[tuple[str doc_id, str reason]]).

    Windows are sorted by length and cut into batches within the handler's token budget by
    ``SortAndBatchBounded`` (like Beam's ``SortAndBatchElements``, which sorts a whole bundle, but with its buffer
    bounded; RunInference's own ``BatchElements`` does not sort, and its length buckets work only with
    ``max_batch_duration_secs``, i.e. stateful streaming batching), then run by RunInference with the handler
    (one model per process, shared by threads).
    A batch whose inference raises is dead-lettered window by window with the reason, never dropped.
    """

    def __init__(self, handler: ElmoModelHandler):
        super().__init__()
        self._handler = handler

    def expand(self, windows):
        batches = windows | "SortAndBatchByTokens" >> SortAndBatchBounded(
            **self._handler.batch_elements_kwargs()
        ).with_input_types(SentenceWindow)
        embedded, dead = (
            batches | "RunInference" >> RunInference(self._handler.with_no_batching()).with_exception_handling()
        )
        failed = dead.failed_inferences | "FailedWindows" >> beam.FlatMap(failed_batch_windows)
        return embedded, failed
