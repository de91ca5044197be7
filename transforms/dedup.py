"""Keeping ids unique: the first document with an id wins, later ones are dead-lettered."""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam

from transforms.metrics import counter
from transforms.records import Document, error_record


class _KeepFirstFn(beam.DoFn):
    """(id, [Document]) -> the first by (source, line); the others -> tagged ``duplicates`` error records."""

    def __init__(self):
        self._duplicates = counter("documents_duplicate_id")

    def process(self, element: tuple[str, Iterable[Document]]):
        doc_id, docs = element
        ordered = sorted(docs, key=lambda d: (d.source, d.line))
        yield ordered[0]
        for dup in ordered[1:]:
            self._duplicates.inc()
            reason = f"duplicate id {doc_id!r} (first seen at {ordered[0].source}:{ordered[0].line})"
            yield beam.pvalue.TaggedOutput(
                "duplicates", error_record("dedup", reason, doc_id, dup.source, dup.line, dup.text)
            )


class DropDuplicateIds(beam.PTransform):
    """PCollection[Document] -> (PCollection[Document] with unique ids, PCollection[dict error record]).

    Deterministic whatever the read order: among documents sharing an id the one earliest by (shard, line) is kept.
    """

    def expand(self, documents):
        kept = (
            documents
            | "KeyById" >> beam.Map(lambda d: (d.doc_id, d))
            | "GroupById" >> beam.GroupByKey()
            | "KeepFirst" >> beam.ParDo(_KeepFirstFn()).with_outputs("duplicates", main="unique")
        )
        return kept.unique, kept.duplicates
