"""Putting documents back together, one sentence at a time: windows' vectors -> one record per sentence.

No grouping holds more than one sentence (plus small fixed-size data per document), whatever the size of its
document (issue 12: one document of thousands of sentences grouped as one element could exhaust a Flink
TaskManager):

1. **by sentence id**: a sentence's shell (its cut of the document: text, tokens, offsets, window spans), its
   window vectors and its carried vectors (nightly runs) are joined and assembled into its record; each sentence
   also sends a small status to its document;
2. **by document id, combined**: a document's verdict from its own part (sentence and token counts, what an error
   record needs), its sentences' statuses and its inference failures, in an accumulator of fixed size
   (``CombinePerKey``, so partial verdicts are combined before the shuffle);
3. **by sentence id again** (``Release``): each record meets the ``DROP`` flags a failed document sends to every
   one of its sentences, so a document is either fully embedded or dead-lettered whole with its reasons.

Without ``--token_vectors`` a record needs only its sentence vector, so a window that is its whole sentence (all but
very long sentences) is reduced to that (W,) vector before the join, in the embedding stage: what crosses the
shuffle is one vector per sentence instead of one per token (T times less: ~25x on English), the same bits as
reducing it after the join.

Wire forms (what crosses a shuffle; see ``transforms.incremental``'s docstring for why plain tuples): every
element is ``(str key, (int tag, value))`` with values of ``str``/``int``/``bytes``/``None``: a shell is one
pickled tuple (its token strings unpickled once, after the shuffle), vectors raw bytes with dtype and shape, a
record one pickled dict (its numpy arrays as raw bytes), statuses and flags a few ints and strings.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np

from elmo.vectors import STORED_DTYPES, sentence_vector
from elmo.windows import merge_windows
from transforms.incremental import KEYED, CarriedSentence, sentence_id, sentence_key
from transforms.metrics import counter
from transforms.records import EXCERPT_CHARS, DocumentStats, TokenizedDocument, WindowVectors, error_record
from transforms.write import VERTEX_JSON, vertex_json

MAX_REASONS = 3  # distinct failure reasons kept per document
SHELL, VECTORS, CARRIED, SENTENCE_VECTOR = range(4)  # join by sentence id: what a sentence's grouped values are
DOC, SENTENCE, FAILED = range(3)  # verdict by document id: its parts
RECORD, DROP = range(2)  # release by sentence id: an assembled record, the flag of a failed document
_PICKLE = pickle.HIGHEST_PROTOCOL
_ARRAYS = ("token_starts", "token_ends", "sentence_vector", "token_vectors")  # a record's numpy fields


class SentenceShell(NamedTuple):
    """Everything one sentence's record needs except its vectors: a sentence-sized cut of its document
    (``SentenceShell._make(pickle.loads(wire))``)."""

    doc_id: str
    sentence_index: int
    source: str
    line: int
    text: str  # the sentence's own text
    char_start: int  # offsets in the document, in code points
    char_end: int
    tokens: tuple[str, ...]
    token_starts: bytes  # (T,) int32, offsets in the document
    token_ends: bytes
    spans: tuple[tuple[int, int], ...]  # its windows, relative to the sentence

    def starts_ends(self) -> tuple[np.ndarray, np.ndarray]:
        return np.frombuffer(self.token_starts, dtype=np.int32), np.frombuffer(self.token_ends, dtype=np.int32)


class ReducedSentence(NamedTuple):
    """A one-window sentence's vector computed before the join, and the token count of the window it came from."""

    vector: np.ndarray  # (W,) float32
    tokens: int


def sentence_shells(tokenized: TokenizedDocument) -> list[SentenceShell]:
    """A document -> one ``SentenceShell`` per sentence, in order."""
    doc = tokenized.doc
    starts = np.ascontiguousarray(tokenized.starts, dtype=np.int32)
    ends = np.ascontiguousarray(tokenized.ends, dtype=np.int32)
    shells = []
    for s, ((first, last), spans) in enumerate(zip(tokenized.sentence_tokens, tokenized.windows, strict=True)):
        char_start, char_end = int(starts[first]), int(ends[last - 1])
        shells.append(
            SentenceShell(
                doc.doc_id,
                s,
                doc.source,
                doc.line,
                doc.text[char_start:char_end],
                char_start,
                char_end,
                tokenized.tokens[first:last],
                starts[first:last].tobytes(),
                ends[first:last].tobytes(),
                spans,
            )
        )
    return shells


def _shells_wire(tokenized: TokenizedDocument) -> list[tuple[str, tuple]]:
    """A document -> ``(sentence id, (SHELL, pickled shell tuple))`` per sentence."""
    return [
        (sentence_id(shell.doc_id, shell.sentence_index), (SHELL, pickle.dumps(tuple(shell), protocol=_PICKLE)))
        for shell in sentence_shells(tokenized)
    ]


def _document_wire(tokenized: TokenizedDocument) -> tuple[str, tuple]:
    """A document's own part of its verdict: ``(doc_id, (DOC, (sentences, tokens, source, line, excerpt)))``."""
    doc = tokenized.doc
    part = (len(tokenized.sentence_tokens), len(tokenized.tokens), doc.source, doc.line, doc.text[:EXCERPT_CHARS])
    return doc.doc_id, (DOC, part)


def _vectors_wire(v: WindowVectors, reduce_whole_sentences: bool) -> tuple[str, tuple]:
    """A window's vectors -> ``(sentence id, (VECTORS, (window, bytes, shape, dtype)))``; with
    ``reduce_whole_sentences``, a window that is its whole sentence -> ``(sentence id, (SENTENCE_VECTOR, (0, bytes
    of its (W,) sentence vector, shape, dtype, the window's token count)))`` (module docstring)."""
    sid, vectors = sentence_id(v.doc_id, v.sentence_index), v.vectors
    if reduce_whole_sentences and v.sentence_windows == 1:
        tokens = vectors.shape[-2]  # (T, W) or (L+1, T, W): carried so that assembling can check it against the shell
        vector = sentence_vector(np.ascontiguousarray(vectors))
        return sid, (SENTENCE_VECTOR, (v.window_index, vector.tobytes(), vector.shape, vector.dtype.str, tokens))
    return sid, (VECTORS, (v.window_index, vectors.tobytes(), vectors.shape, vectors.dtype.str))


def _record_wire(record: dict[str, Any]) -> bytes:
    """A sentence record as one pickled blob, its numpy arrays as (bytes, dtype, shape): half the cost of pickling
    the arrays themselves."""
    record = dict(record)
    arrays = [record.pop(name) for name in _ARRAYS]
    arrays = [None if a is None else (a.tobytes(), a.dtype.str, a.shape) for a in arrays]
    return pickle.dumps((record, arrays), protocol=_PICKLE)


def _record_from_wire(blob: bytes) -> dict[str, Any]:
    record, arrays = pickle.loads(blob)
    for name, a in zip(_ARRAYS, arrays, strict=True):
        record[name] = None if a is None else np.frombuffer(a[0], dtype=a[1]).reshape(a[2])
    return record


def sentence_record(
    shell: SentenceShell,
    vectors: dict[int, np.ndarray],
    layers: str,
    dtype: str,
    fingerprint: str,
    with_token_vectors: bool,
    digest: str = "",
    carried: CarriedSentence | None = None,
    reduced: ReducedSentence | None = None,
) -> dict[str, Any]:
    """One sentence record (schema in docs/pipeline.md), vectors as numpy arrays of ``dtype``.

    ``vectors[window]``: (T_w, W) or (L+1, T_w, W) float32, merged with ``elmo.windows.merge_windows`` (each token
    from the window where it is most central). ``reduced``: instead, the (W,) float32 sentence vector of a
    one-window sentence, computed before the join (only without token vectors), with its window's token count.
    A ``carried`` sentence takes the previous run's vectors instead.
    ``digest`` (the vector-changing settings) keys the sentence by content (``key``); ``changed`` (not a column)
    says whether a vector index needs an upsert.
    """
    s = shell.sentence_index
    out_type = STORED_DTYPES[dtype]
    if carried is not None:
        vector, token_vectors = _carried_vectors(carried, with_token_vectors)
        key = carried.key  # the same tokens under the same settings: no need to hash them again
    elif reduced is not None:
        if with_token_vectors or len(shell.spans) != 1:
            raise ValueError(f"sentence {s} came as one sentence vector, but it has {len(shell.spans)} windows")
        if reduced.tokens != len(shell.tokens):
            raise ValueError(f"sentence {s} has {len(shell.tokens)} tokens, but its vector came from {reduced.tokens}")
        key = sentence_key(digest, shell.tokens)
        vector, token_vectors = reduced.vector.astype(out_type), None
    else:
        key = sentence_key(digest, shell.tokens)
        n = len(shell.tokens)
        merged = merge_windows([vectors[w] for w in range(len(shell.spans))], shell.spans, n)  # (..., n, W)
        vector = sentence_vector(merged).astype(out_type)
        token_vectors = merged.astype(out_type) if with_token_vectors else None
    if not np.isfinite(vector).all():
        raise ValueError(f"sentence {s} has a non-finite vector in {dtype}")
    starts, ends = shell.starts_ends()
    return {
        "id": sentence_id(shell.doc_id, s),
        "doc_id": shell.doc_id,
        "sentence_index": s,
        "key": key,
        "source": shell.source,
        "line": shell.line,
        "text": shell.text,
        "char_start": shell.char_start,
        "char_end": shell.char_end,
        "tokens": list(shell.tokens),
        "token_starts": starts,
        "token_ends": ends,
        "n_windows": len(shell.spans),
        "sentence_vector": vector,
        "token_vectors": token_vectors,
        "layers": layers,
        "dtype": dtype,
        "model_fingerprint": fingerprint,
        "changed": carried is None or not carried.unchanged,
    }


def _carried_vectors(carried: CarriedSentence, with_token_vectors: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """A carried sentence's (W,) vector and token vectors in the layout of a fresh one: (T, W) or (L+1, T, W)."""
    vector, token_vectors = carried.vectors()
    if not with_token_vectors:
        token_vectors = None
    if token_vectors is not None and token_vectors.ndim == 3:  # stored per token: (T, L+1, W)
        token_vectors = token_vectors.transpose(1, 0, 2)
    return vector, token_vectors


class _AssembleSentenceFn(beam.DoFn):
    """(sentence id, [(SHELL | VECTORS | SENTENCE_VECTOR | CARRIED, value)]) -> ``(sentence id, (RECORD, pickled
    record))`` when it could be assembled (the record with its Vertex AI line, ``VERTEX_JSON``, formatted once for
    vertex/ and vertex-delta/); always a tagged ``status``: ``(doc_id, (SENTENCE, (sentence_index, ok, missing windows,
    expected windows, carried, reason)))``."""

    def __init__(self, layers: str, dtype: str, fingerprint: str, with_token_vectors: bool, digest: str):
        self._layers = layers
        self._dtype = dtype
        self._fingerprint = fingerprint
        self._with_token_vectors = with_token_vectors
        self._digest = digest

    def process(self, element: tuple[str, Iterable[tuple[int, Any]]]):
        sid, tagged = element
        shell, vectors, carried, reduced = None, {}, None, None
        for tag, value in tagged:
            if tag == VECTORS:
                w, data, shape, dtype = value
                vectors[w] = np.frombuffer(data, dtype=dtype).reshape(shape)
            elif tag == SENTENCE_VECTOR:  # window w (= 0) came, as the sentence vector
                w, data, shape, dtype, tokens = value
                vectors[w], reduced = None, ReducedSentence(np.frombuffer(data, dtype=dtype).reshape(shape), tokens)
            elif tag == CARRIED:
                carried = CarriedSentence._make(value)
            else:
                shell = SentenceShell._make(pickle.loads(value))
        if shell is None:  # vectors without a document cannot happen: the windows come from its shells
            return
        expected = 0 if carried is not None else len(shell.spans)
        missing = sum(w not in vectors for w in range(expected))
        reason = ""
        if not missing:
            try:
                record = sentence_record(
                    shell,
                    vectors,
                    self._layers,
                    self._dtype,
                    self._fingerprint,
                    self._with_token_vectors,
                    self._digest,
                    carried,
                    reduced,
                )
                record[VERTEX_JSON] = vertex_json(record)  # formatted once here for vertex/ and vertex-delta/
            except Exception as exc:  # never lose a document: it goes to errors/ with the reason
                reason = f"assembling failed: {type(exc).__name__}: {exc}"
            else:
                yield sid, (RECORD, _record_wire(record))
        ok = not missing and not reason
        status = (shell.sentence_index, ok, missing, expected, int(carried is not None), reason)
        yield beam.pvalue.TaggedOutput("status", (shell.doc_id, (SENTENCE, status)))


# A document's verdict, of fixed size whatever its number of sentences (a plain list: the accumulator's coder
# encodes it natively):
_PART, _OK, _MISSING, _EXPECTED, _CARRIED, _FAILED, _ASSEMBLING = range(7)


class _DocumentVerdictFn(beam.CombineFn):
    """A document's parts -> ``[doc part or None, sentences ok, missing windows, expected windows, carried
    sentences, the MAX_REASONS smallest inference failure reasons, (sentence index, reason) of the first sentence
    that failed to assemble or None]``."""

    def create_accumulator(self):
        return [None, 0, 0, 0, 0, [], None]

    def add_input(self, acc, part):
        tag, value = part
        if tag == DOC:
            acc[_PART] = value
        elif tag == FAILED:
            acc[_FAILED] = _smallest(acc[_FAILED], (value,))
        else:
            s, ok, missing, expected, carried, reason = value
            acc[_OK] += int(ok)
            acc[_MISSING] += missing
            acc[_EXPECTED] += expected
            acc[_CARRIED] += carried
            if reason:
                acc[_ASSEMBLING] = _first(acc[_ASSEMBLING], (s, reason))
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            out[_PART] = out[_PART] or acc[_PART]
            for i in (_OK, _MISSING, _EXPECTED, _CARRIED):
                out[i] += acc[i]
            out[_FAILED] = _smallest(out[_FAILED], acc[_FAILED])
            out[_ASSEMBLING] = _first(out[_ASSEMBLING], acc[_ASSEMBLING])
        return out

    def extract_output(self, acc):
        return acc


def _smallest(reasons: list[str], more: Iterable[str]) -> list[str]:
    return sorted(set(reasons).union(more))[:MAX_REASONS]


def _first(a: tuple | None, b: tuple | None) -> tuple | None:
    """The (sentence index, reason) of the earlier sentence (as assembling a whole document stopped at it)."""
    if a is None or b is None:
        return b if a is None else a
    return min(tuple(a), tuple(b))


class _VerdictFn(beam.DoFn):
    """(doc_id, verdict) -> for an embedded document a tagged ``stats``; for a failed one a tagged ``failed``
    error record and ``(sentence id, (DROP, None))`` for each of its sentences (its records are dropped)."""

    def __init__(self):
        self._embedded = counter("documents_embedded")
        self._failed = counter("documents_failed_embedding")

    def process(self, element):
        doc_id, (part, ok, missing, expected, carried, failed, assembling) = element
        if part is None:  # parts of a document that was never tokenized cannot happen
            return
        n_sentences, n_tokens, source, line, excerpt = part
        reasons = list(failed)
        if not reasons and missing:
            reasons = [f"{missing} of {expected} windows came back empty"]
        if not reasons and assembling is not None:
            reasons = [assembling[1]]
        if not reasons and ok != n_sentences:
            reasons = [f"{n_sentences - ok} of {n_sentences} sentences were not assembled"]
        if reasons:
            self._failed.inc()
            reason = "; ".join(reasons[:MAX_REASONS])
            yield beam.pvalue.TaggedOutput("failed", error_record("embed", reason, doc_id, source, line, excerpt))
            for s in range(n_sentences):
                yield sentence_id(doc_id, s), (DROP, None)
            return
        self._embedded.inc()
        yield beam.pvalue.TaggedOutput("stats", DocumentStats(doc_id, n_sentences, n_tokens, expected, carried))


def _released(element: tuple[str, Iterable[tuple[int, Any]]]):
    """(sentence id, [(RECORD, pickled record) | (DROP, None)]) -> the record, unless its document failed."""
    _, tagged = element
    blobs = []
    for tag, value in tagged:
        if tag == DROP:
            return
        blobs.append(value)
    for blob in blobs:
        yield _record_from_wire(blob)


class AssembleSentences(beam.PTransform):
    """{'doc': PCollection[TokenizedDocument], 'vectors': PCollection[WindowVectors],
    'failed': PCollection[tuple[str doc_id, str reason]], optional 'carried': PCollection[carried sentence tuple]}
    -> (PCollection[dict sentence record], PCollection[DocumentStats], PCollection[dict error record]).

    A document with any failed or missing window, or any sentence that cannot be assembled, is dead-lettered as a
    whole (so a document is either fully embedded or in errors/, never half). Carried sentences (from a previous
    run) take their stored vectors. Assembled by sentence (module docstring): no grouping holds more than one
    sentence's data, whatever the size of its document.
    """

    def __init__(self, layers: str, dtype: str, fingerprint: str, with_token_vectors: bool, digest: str = ""):
        super().__init__()
        if dtype not in STORED_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(STORED_DTYPES)}, not {dtype!r}")
        self._fn = _AssembleSentenceFn(layers, dtype, fingerprint, with_token_vectors, digest)
        self._reduce_whole_sentences = not with_token_vectors

    def expand(self, inputs: dict[str, Any]):
        docs: beam.PCollection[TokenizedDocument] = inputs["doc"]
        vectors: beam.PCollection[WindowVectors] = inputs["vectors"]
        by_sentence = [
            docs | "Shells" >> beam.FlatMap(_shells_wire).with_output_types(KEYED),
            vectors | "KeyVectors" >> beam.Map(_vectors_wire, self._reduce_whole_sentences).with_output_types(KEYED),
        ]
        if "carried" in inputs:
            by_sentence.append(
                inputs["carried"]
                | "KeyCarried" >> beam.Map(lambda c: (sentence_id(c[0], c[1]), (CARRIED, c))).with_output_types(KEYED)
            )
        assembled = (
            by_sentence
            | "GroupBySentence/Flatten" >> beam.Flatten()
            | "GroupBySentence/GroupByKey" >> beam.GroupByKey()
            | "Assemble" >> beam.ParDo(self._fn).with_output_types(KEYED).with_outputs("status", main="records")
        )
        parts = (
            docs | "DocumentPart" >> beam.Map(_document_wire).with_output_types(KEYED),
            assembled.status,
            inputs["failed"] | "FailedParts" >> beam.Map(lambda f: (f[0], (FAILED, f[1]))).with_output_types(KEYED),
        )
        verdicts = (
            parts
            | "ByDocument/Flatten" >> beam.Flatten()
            | "ByDocument/Combine" >> beam.CombinePerKey(_DocumentVerdictFn())
            | "Verdict"
            >> beam.ParDo(_VerdictFn()).with_output_types(KEYED).with_outputs("stats", "failed", main="drop")
        )
        sentences = (
            (assembled.records, verdicts.drop)
            | "Release/Flatten" >> beam.Flatten()
            | "Release/GroupByKey" >> beam.GroupByKey()
            | "Released" >> beam.FlatMap(_released)
        )
        return sentences, verdicts.stats, verdicts.failed
