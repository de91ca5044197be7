"""Putting a document back together: its windows' vectors -> one record per sentence."""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import numpy as np

from elmo.vectors import STORED_DTYPES, sentence_vector
from elmo.windows import merge_windows
from transforms.incremental import KEYED, CarriedSentence, sentence_id, sentence_key
from transforms.metrics import counter
from transforms.records import Document, DocumentStats, TokenizedDocument, WindowVectors, error_record
from transforms.write import VERTEX_JSON, vertex_json

MAX_REASONS = 3  # distinct failure reasons kept per document
DOC, VECTORS, FAILED, CARRIED = range(4)  # what a document's grouped values are

# What crosses the GroupByKey: (doc_id, (tag, value)), values plain tuples of str/int/bytes (vectors as raw bytes)
# or the document as one pickled blob, which Beam's FastPrimitivesCoder encodes natively or copies (dataclasses and
# numpy arrays would be pickled by its fallback, several times slower; the local runner encodes them twice, its
# Flatten before a GroupByKey being a stage of its own).


def _doc_wire(tokenized: TokenizedDocument) -> tuple[str, tuple]:
    """A tokenized document as one pickled blob of str, int and bytes (offsets as int32 bytes): the coder copies
    it; its token strings are unpickled once, after the shuffle (as a tuple of strings each decode costs ~30x
    more, as a pickled dataclass with numpy arrays several times more)."""
    doc = tokenized.doc
    starts = np.ascontiguousarray(tokenized.starts, dtype=np.int32).tobytes()
    ends = np.ascontiguousarray(tokenized.ends, dtype=np.int32).tobytes()
    wire = (doc.doc_id, doc.text, doc.source, doc.line, tokenized.tokens, starts, ends)
    blob = pickle.dumps((*wire, tokenized.sentence_tokens, tokenized.windows), protocol=pickle.HIGHEST_PROTOCOL)
    return doc.doc_id, (DOC, blob)


def _doc_from_wire(blob: bytes) -> TokenizedDocument:
    doc_id, text, source, line, tokens, starts, ends, sentence_tokens, windows = pickle.loads(blob)
    return TokenizedDocument(
        doc=Document(doc_id, text, source, line),
        tokens=tokens,
        starts=np.frombuffer(starts, dtype=np.int32),
        ends=np.frombuffer(ends, dtype=np.int32),
        sentence_tokens=sentence_tokens,
        windows=windows,
    )


def _vectors_wire(v: WindowVectors) -> tuple[str, tuple]:
    vectors = v.vectors
    return v.doc_id, (VECTORS, (v.sentence_index, v.window_index, vectors.tobytes(), vectors.shape, vectors.dtype.str))


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
    out_type = STORED_DTYPES[dtype]
    carried = carried or {}
    records = []
    for s, ((first, last), spans) in enumerate(zip(tokenized.sentence_tokens, tokenized.windows, strict=True)):
        tokens = tokenized.tokens[first:last]
        if s in carried:
            vector, token_vectors = _carried_vectors(carried[s], with_token_vectors)
            key = carried[s].key  # the same tokens under the same settings: no need to hash them again
        else:
            key = sentence_key(digest, tokens)
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
                "key": key,
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
    vector, token_vectors = carried.vectors()
    if not with_token_vectors:
        token_vectors = None
    if token_vectors is not None and token_vectors.ndim == 3:  # stored per token: (T, L+1, W)
        token_vectors = token_vectors.transpose(1, 0, 2)
    return vector, token_vectors


class _AssembleFn(beam.DoFn):
    """(doc_id, [(DOC | VECTORS | CARRIED | FAILED, value)]) -> sentence records, each with its Vertex AI line
    (``VERTEX_JSON``, formatted once for vertex/ and vertex-delta/); tagged ``stats`` and ``failed`` outputs."""

    def __init__(self, layers: str, dtype: str, fingerprint: str, with_token_vectors: bool, digest: str):
        self._layers = layers
        self._dtype = dtype
        self._fingerprint = fingerprint
        self._with_token_vectors = with_token_vectors
        self._digest = digest
        self._embedded = counter("documents_embedded")
        self._failed = counter("documents_failed_embedding")

    def process(self, element: tuple[str, Iterable[tuple[int, Any]]]):
        doc_id, tagged = element
        docs, failed, vectors, carried = [], set(), {}, {}
        for tag, value in tagged:
            if tag == VECTORS:
                s, w, data, shape, dtype = value
                vectors[(s, w)] = np.frombuffer(data, dtype=dtype).reshape(shape)
            elif tag == CARRIED:
                c = CarriedSentence._make(value)
                carried[c.sentence_index] = c
            elif tag == DOC:
                docs.append(value)
            else:
                failed.add(value)
        tokenized = _doc_from_wire(docs[0])  # exactly one: ids are unique, windows come from it
        doc = tokenized.doc
        reasons = sorted(failed)
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
                for record in records:  # formatted once here for vertex/ and vertex-delta/
                    record[VERTEX_JSON] = vertex_json(record)
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
    'failed': PCollection[tuple[str doc_id, str reason]], optional 'carried': PCollection[carried sentence tuple]}
    -> (PCollection[dict sentence record], PCollection[DocumentStats], PCollection[dict error record]).

    Groups everything of a document by its id; a document with any failed or missing window is dead-lettered as a
    whole (so a document is either fully embedded or in errors/, never half). Carried sentences (from a previous
    run) take their stored vectors.
    """

    def __init__(self, layers: str, dtype: str, fingerprint: str, with_token_vectors: bool, digest: str = ""):
        super().__init__()
        if dtype not in STORED_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(STORED_DTYPES)}, not {dtype!r}")
        self._fn = _AssembleFn(layers, dtype, fingerprint, with_token_vectors, digest)

    def expand(self, inputs: dict[str, Any]):
        docs: beam.PCollection[TokenizedDocument] = inputs["doc"]
        vectors: beam.PCollection[WindowVectors] = inputs["vectors"]
        keyed = [
            docs | "KeyDocs" >> beam.Map(_doc_wire).with_output_types(KEYED),
            vectors | "KeyVectors" >> beam.Map(_vectors_wire).with_output_types(KEYED),
            inputs["failed"] | "KeyFailed" >> beam.Map(lambda f: (f[0], (FAILED, f[1]))).with_output_types(KEYED),
        ]
        if "carried" in inputs:
            keyed.append(
                inputs["carried"] | "KeyCarried" >> beam.Map(lambda c: (c[0], (CARRIED, c))).with_output_types(KEYED)
            )
        out = (
            keyed
            | "GroupByDocument/Flatten" >> beam.Flatten()
            | "GroupByDocument/GroupByKey" >> beam.GroupByKey()
            | "Assemble" >> beam.ParDo(self._fn).with_outputs("stats", "failed", main="sentences")
        )
        return out.sentences, out.stats, out.failed
