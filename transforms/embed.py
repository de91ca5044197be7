"""Embedding windows through Beam's RunInference, in length-sorted batches bounded by a token budget."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from transforms.batching import SortAndBatchByWeight
from transforms.model_handler import ElmoModelHandler
from transforms.records import SentenceWindow, exception_reason


def failed_batch_windows(bad: tuple) -> list[tuple[str, str]]:
    """RunInference's failed ``(batch, exception)`` -> ``(doc_id, reason)`` for every window of the batch."""
    batch, exc_info = bad  # exc_info: (type, repr, traceback lines), as with_exception_handling gives it
    reason = f"inference failed: {exception_reason(exc_info)}"
    return [(w.doc_id, reason) for w in batch]


class EmbedWindows(beam.PTransform):
    """PCollection[SentenceWindow] -> (PCollection[WindowVectors], PCollection[tuple[str doc_id, str reason]]).

    Each bundle's windows are sorted by length and cut into batches whose token count stays under the handler's
    ``max_batch_weight`` (``SortAndBatchByWeight``: RunInference's own ``BatchElements`` neither sorts nor bounds
    tokens), then run by RunInference with the handler (one model per process, shared by threads).
    A batch whose inference raises is dead-lettered window by window with the reason, never dropped.
    """

    def __init__(self, handler: ElmoModelHandler):
        super().__init__()
        self._handler = handler

    def expand(self, windows):
        kwargs = self._handler.batch_elements_kwargs()
        batches = windows | "SortAndBatchByTokens" >> SortAndBatchByWeight(
            size_fn=kwargs["element_size_fn"],
            max_batch_size=kwargs["max_batch_size"],
            max_batch_weight=kwargs["max_batch_weight"],
        ).with_input_types(SentenceWindow)
        embedded, dead = (
            batches | "RunInference" >> RunInference(self._handler.with_no_batching()).with_exception_handling()
        )
        failed = dead.failed_inferences | "FailedWindows" >> beam.FlatMap(failed_batch_windows)
        return embedded, failed
