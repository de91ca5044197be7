"""Putting a document back together: its windows' vectors -> one record per sentence."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import numpy as np

from elmo.windows import merge_windows
from transforms.metrics import counter
from transforms.records import DocumentStats, TokenizedDocument, WindowVectors, error_record

DTYPES = {"float32": np.float32, "float16": np.float16}
MAX_REASONS = 3  # distinct failure reasons kept per document


def sentence_vector(token_vectors: np.ndarray) -> np.ndarray:
    """The sentence vector: mean over tokens of the layer mix; for layers=all, of the average of the layers.

    token_vectors (T, W) or (L+1, T, W) float32 -> (W,) float32.
    """
    mixed = token_vectors.mean(axis=0) if token_vectors.ndim == 3 else token_vectors  # (T, W)
    return mixed.mean(axis=0)


def sentence_records(
    tokenized: TokenizedDocument,
    vectors: dict[tuple[int, int], np.ndarray],
    layers: str,
    dtype: str,
    fingerprint: str,
    with_token_vectors: bool,
) -> list[dict[str, Any]]:
    """All sentence records of one document (schema in docs/pipeline.md), vectors as numpy arrays of ``dtype``.

    ``vectors[(sentence, window)]``: (T_w, W) or (L+1, T_w, W) float32. Windows are merged with
    ``elmo.windows.merge_windows`` (each token from the window where it is most central).
    """
    doc = tokenized.doc
    out_type = DTYPES[dtype]
    records = []
    for s, ((first, last), spans) in enumerate(zip(tokenized.sentence_tokens, tokenized.windows, strict=True)):
        n = last - first
        merged = merge_windows([vectors[(s, w)] for w in range(len(spans))], spans, n)  # (..., n, W)
        char_start, char_end = int(tokenized.starts[first]), int(tokenized.ends[last - 1])
        vector = sentence_vector(merged).astype(out_type)
        if not np.isfinite(vector).all():
            raise ValueError(f"sentence {s} has a non-finite vector in {dtype}")
        records.append(
            {
                "id": f"{doc.doc_id}#{s}",
                "doc_id": doc.doc_id,
                "sentence_index": s,
                "source": doc.source,
                "line": doc.line,
                "text": doc.text[char_start:char_end],
                "char_start": char_start,
                "char_end": char_end,
                "tokens": list(tokenized.tokens[first:last]),
                "token_starts": tokenized.starts[first:last],
                "token_ends": tokenized.ends[first:last],
                "n_windows": len(spans),
                "sentence_vector": vector,
                "token_vectors": merged.astype(out_type) if with_token_vectors else None,
                "layers": layers,
                "dtype": dtype,
                "model_fingerprint": fingerprint,
            }
        )
    return records


class _AssembleFn(beam.DoFn):
    """(doc_id, {'doc', 'vectors', 'failed'}) -> sentence records; tagged ``stats`` and ``failed`` outputs."""

    def __init__(self, layers: str, dtype: str, fingerprint: str, with_token_vectors: bool):
        self._layers = layers
        self._dtype = dtype
        self._fingerprint = fingerprint
        self._with_token_vectors = with_token_vectors
        self._embedded = counter("documents_embedded")
        self._failed = counter("documents_failed_embedding")

    def process(self, element: tuple[str, dict[str, Iterable[Any]]]):
        doc_id, grouped = element
        tokenized: TokenizedDocument = next(iter(grouped["doc"]))  # exactly one: ids are unique, windows come from it
        doc = tokenized.doc
        reasons = sorted(set(grouped["failed"]))
        vectors = {(v.sentence_index, v.window_index): v.vectors for v in grouped["vectors"]}
        if not reasons and len(vectors) != tokenized.n_windows:
            reasons = [f"{tokenized.n_windows - len(vectors)} of {tokenized.n_windows} windows came back empty"]
        if not reasons:
            try:
                records = sentence_records(
                    tokenized, vectors, self._layers, self._dtype, self._fingerprint, self._with_token_vectors
                )
            except Exception as exc:  # never lose a document: it goes to errors/ with the reason
                reasons = [f"assembling failed: {type(exc).__name__}: {exc}"]
        if reasons:
            self._failed.inc()
            reason = "; ".join(reasons[:MAX_REASONS])
            yield beam.pvalue.TaggedOutput(
                "failed", error_record("embed", reason, doc_id, doc.source, doc.line, doc.text)
            )
        else:
            self._embedded.inc()
            yield from records
            stats = DocumentStats(doc_id, len(records), len(tokenized.tokens), tokenized.n_windows)
            yield beam.pvalue.TaggedOutput("stats", stats)


class AssembleSentences(beam.PTransform):
    """{'doc': PCollection[TokenizedDocument], 'vectors': PCollection[WindowVectors],
    'failed': PCollection[tuple[str doc_id, str reason]]}
    -> (PCollection[dict sentence record], PCollection[DocumentStats], PCollection[dict error record]).

    Groups everything of a document by its id; a document with any failed or missing window is dead-lettered as a
    whole (so a document is either fully embedded or in errors/, never half).
    """

    def __init__(self, layers: str, dtype: str, fingerprint: str, with_token_vectors: bool):
        super().__init__()
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
        self._fn = _AssembleFn(layers, dtype, fingerprint, with_token_vectors)

    def expand(self, inputs: dict[str, Any]):
        docs: beam.PCollection[TokenizedDocument] = inputs["doc"]
        vectors: beam.PCollection[WindowVectors] = inputs["vectors"]
        keyed = {
            "doc": docs | "KeyDocs" >> beam.Map(lambda t: (t.doc.doc_id, t)),
            "vectors": vectors | "KeyVectors" >> beam.Map(lambda v: (v.doc_id, v)),
            "failed": inputs["failed"],
        }
        out = (
            keyed
            | "GroupByDocument" >> beam.CoGroupByKey()
            | "Assemble" >> beam.ParDo(self._fn).with_outputs("stats", "failed", main="sentences")
        )
        return out.sentences, out.stats, out.failed
