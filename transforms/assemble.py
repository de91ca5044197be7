"""Putting a document back together: its windows' vectors -> one record per sentence."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import numpy as np

from elmo.windows import merge_windows
from transforms.incremental import CarriedSentence, sentence_id, sentence_key
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
    digest: str = "",
    carried: dict[int, CarriedSentence] | None = None,
) -> list[dict[str, Any]]:
    """All sentence records of one document (schema in docs/pipeline.md), vectors as numpy arrays of ``dtype``.

    ``vectors[(sentence, window)]``: (T_w, W) or (L+1, T_w, W) float32. Windows are merged with
    ``elmo.windows.merge_windows`` (each token from the window where it is most central). A sentence in
    ``carried`` takes the previous run's vectors instead. ``digest`` (the vector-changing settings) keys each
    sentence by content (``key``); ``changed`` (not a column) says whether a vector index needs an upsert.
    """
    doc = tokenized.doc
    out_type = DTYPES[dtype]
    carried = carried or {}
    records = []
    for s, ((first, last), spans) in enumerate(zip(tokenized.sentence_tokens, tokenized.windows, strict=True)):
        tokens = tokenized.tokens[first:last]
        if s in carried:
            vector, token_vectors = _carried_vectors(carried[s], with_token_vectors)
        else:
            merged = merge_windows([vectors[(s, w)] for w in range(len(spans))], spans, last - first)  # (..., n, W)
            vector = sentence_vector(merged).astype(out_type)
            token_vectors = merged.astype(out_type) if with_token_vectors else None
        char_start, char_end = int(tokenized.starts[first]), int(tokenized.ends[last - 1])
        if not np.isfinite(vector).all():
            raise ValueError(f"sentence {s} has a non-finite vector in {dtype}")
        records.append(
            {
                "id": sentence_id(doc.doc_id, s),
                "doc_id": doc.doc_id,
                "sentence_index": s,
                "key": sentence_key(digest, tokens),
                "source": doc.source,
                "line": doc.line,
                "text": doc.text[char_start:char_end],
                "char_start": char_start,
                "char_end": char_end,
                "tokens": list(tokens),
                "token_starts": tokenized.starts[first:last],
                "token_ends": tokenized.ends[first:last],
                "n_windows": len(spans),
                "sentence_vector": vector,
                "token_vectors": token_vectors,
                "layers": layers,
                "dtype": dtype,
                "model_fingerprint": fingerprint,
                "changed": s not in carried or not carried[s].unchanged,
            }
        )
    return records


def _carried_vectors(carried: CarriedSentence, with_token_vectors: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """A carried sentence's (W,) vector and token vectors in the layout of a fresh one: (T, W) or (L+1, T, W)."""
    token_vectors = carried.token_vectors if with_token_vectors else None
    if token_vectors is not None and token_vectors.ndim == 3:  # stored per token: (T, L+1, W)
        token_vectors = token_vectors.transpose(1, 0, 2)
    return carried.sentence_vector, token_vectors


class _AssembleFn(beam.DoFn):
    """(doc_id, {'doc', 'vectors', 'carried', 'failed'}) -> sentence records; tagged ``stats`` and ``failed``
    outputs."""

    def __init__(self, layers: str, dtype: str, fingerprint: str, with_token_vectors: bool, digest: str):
        self._layers = layers
        self._dtype = dtype
        self._fingerprint = fingerprint
        self._with_token_vectors = with_token_vectors
        self._digest = digest
        self._embedded = counter("documents_embedded")
        self._failed = counter("documents_failed_embedding")

    def process(self, element: tuple[str, dict[str, Iterable[Any]]]):
        doc_id, grouped = element
        tokenized: TokenizedDocument = next(iter(grouped["doc"]))  # exactly one: ids are unique, windows come from it
        doc = tokenized.doc
        reasons = sorted(set(grouped["failed"]))
        vectors = {(v.sentence_index, v.window_index): v.vectors for v in grouped["vectors"]}
        carried = {c.sentence_index: c for c in grouped.get("carried", ())}
        expected = sum(len(spans) for s, spans in enumerate(tokenized.windows) if s not in carried)
        if not reasons and len(vectors) != expected:
            reasons = [f"{expected - len(vectors)} of {expected} windows came back empty"]
        if not reasons:
            try:
                records = sentence_records(
                    tokenized,
                    vectors,
                    self._layers,
                    self._dtype,
                    self._fingerprint,
                    self._with_token_vectors,
                    self._digest,
                    carried,
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
            windows = sum(len(spans) for s, spans in enumerate(tokenized.windows) if s not in carried)
            stats = DocumentStats(doc_id, len(records), len(tokenized.tokens), windows, len(carried))
            yield beam.pvalue.TaggedOutput("stats", stats)


class AssembleSentences(beam.PTransform):
    """{'doc': PCollection[TokenizedDocument], 'vectors': PCollection[WindowVectors],
    'failed': PCollection[tuple[str doc_id, str reason]], optional 'carried': PCollection[CarriedSentence]}
    -> (PCollection[dict sentence record], PCollection[DocumentStats], PCollection[dict error record]).

    Groups everything of a document by its id; a document with any failed or missing window is dead-lettered as a
    whole (so a document is either fully embedded or in errors/, never half). Carried sentences (from a previous
    run) take their stored vectors.
    """

    def __init__(self, layers: str, dtype: str, fingerprint: str, with_token_vectors: bool, digest: str = ""):
        super().__init__()
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
        self._fn = _AssembleFn(layers, dtype, fingerprint, with_token_vectors, digest)

    def expand(self, inputs: dict[str, Any]):
        docs: beam.PCollection[TokenizedDocument] = inputs["doc"]
        vectors: beam.PCollection[WindowVectors] = inputs["vectors"]
        keyed = {
            "doc": docs | "KeyDocs" >> beam.Map(lambda t: (t.doc.doc_id, t)),
            "vectors": vectors | "KeyVectors" >> beam.Map(lambda v: (v.doc_id, v)),
            "failed": inputs["failed"],
        }
        if "carried" in inputs:
            keyed["carried"] = inputs["carried"] | "KeyCarried" >> beam.Map(lambda c: (c.doc_id, c))
        out = (
            keyed
            | "GroupByDocument" >> beam.CoGroupByKey()
            | "Assemble" >> beam.ParDo(self._fn).with_outputs("stats", "failed", main="sentences")
        )
        return out.sentences, out.stats, out.failed
