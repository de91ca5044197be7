"""Nightly re-embedding: reuse a previous run's vectors by sentence content, list what changed and what vanished.

In the deterministic (fixed initial state) mode a sentence's vectors depend only on its tokens and on the settings
that change vectors, so every sentence is keyed by ``sentence_key(settings_digest, tokens)``. A run given a previous
run joins, inside the job (keyed joins the runner distributes, never a table in one process):

1. by document (sentence ids are ``<doc_id>#<i>``): which ids are unchanged (same key as before), which are new or
   changed (an upsert for a vector index), which previous ids are gone (deleted), and each document's status;
2. by key: a sentence whose key the previous run holds takes the stored vectors (one previous row per key, the one
   with the smallest id, so the choice is deterministic); the others are embedded.

The light joins carry ids, keys and tokens; the previous vectors cross one shuffle, keyed by sentence key.

Elements that cross a shuffle are plain tuples of ``str``/``int``/``bool``/``bytes`` (vectors as raw bytes with
their dtype and shape), keyed by ``str``: Beam's ``FastPrimitivesCoder`` encodes those natively, where dataclasses,
named tuples and numpy arrays fall back to pickling (several times slower on every shuffle, and twice per join on
the local runner, whose Flatten before a GroupByKey is a stage of its own).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam import typehints
from apache_beam.io.parquetio import ReadAllFromParquetBatched

from transforms.metrics import counter
from transforms.records import SentenceWindow, TokenizedDocument

KEY_HEX = 32  # 128 bits of sha256: no collision among 10^12 sentences in practice
PREVIOUS_COLUMNS = ("id", "doc_id", "key", "sentence_vector")
KEYED = typehints.Tuple[str, typehints.Any]  # (str key, value): StrUtf8Coder + FastPrimitivesCoder on every input
NOW, PREV = 0, 1  # join tags: this run's side, the previous run's side

# Wire forms (plain tuples, see the module docstring):
#   unit (``sentence_units``): (id, doc_id, sentence_index, key, windows), windows = the tokens of each window,
#     pickled
#   stored vectors (``table_rows``): (id, vector bytes, dtype str, token vector bytes | None, token shape | None)
#   carried sentence (``MatchPrevious``): (doc_id, sentence_index, key, unchanged, stored vectors)


class CarriedSentence(NamedTuple):
    """A sentence whose vectors come from the previous run (``CarriedSentence._make(wire tuple)``)."""

    doc_id: str
    sentence_index: int
    key: str
    unchanged: bool  # the previous run held this id with this key (no upsert needed)
    stored: tuple  # (id, vector bytes, dtype str, token vector bytes | None, token vectors' shape | None)

    def vectors(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The (W,) sentence vector and the token vectors as stored per token, (T, W) or (T, L+1, W), or None
        (read-only views of the bytes, in the stored dtype: the run's, since the vector settings match)."""
        _, vector, dtype, token_bytes, token_shape = self.stored
        tokens = None if token_bytes is None else np.frombuffer(token_bytes, dtype=dtype).reshape(token_shape)
        return np.frombuffer(vector, dtype=dtype), tokens


def settings_digest(settings: dict[str, Any]) -> str:
    """A short hash of every setting that changes a sentence's vectors (model fingerprint, layers, dtype, ...)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def sentence_key(digest: str, tokens: Iterable[str]) -> str:
    """The content key of a sentence: its tokens (not its text: spacing between tokens changes no vector) under
    the vector-changing settings ``digest``."""
    h = hashlib.sha256(digest.encode("ascii"))
    for token in tokens:
        h.update(b"\x1f" + token.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:KEY_HEX]


def sentence_id(doc_id: str, sentence_index: int) -> str:
    """A sentence row's id: ``<doc_id>#<sentence_index>``."""
    return f"{doc_id}#{sentence_index}"


def sentence_units(tokenized: TokenizedDocument, digest: str) -> list[tuple]:
    """Every sentence of a document as a unit: ``(id, doc_id, sentence_index, key, windows)``, ``windows`` the
    tokens of each window as one pickled blob (only the few sentences to embed unpickle it: crossing two joins as
    bytes costs a copy, as a tuple of strings ~30x more)."""
    doc_id = tokenized.doc.doc_id
    all_tokens = tokenized.tokens
    units = []
    for s, ((first, last), spans) in enumerate(zip(tokenized.sentence_tokens, tokenized.windows, strict=True)):
        tokens = all_tokens[first:last]
        windows = (tokens,) if len(spans) == 1 else tuple(tokens[a:b] for a, b in spans)
        blob = pickle.dumps(windows, protocol=pickle.HIGHEST_PROTOCOL)
        units.append((f"{doc_id}#{s}", doc_id, s, sentence_key(digest, tokens), blob))
    return units


def table_rows(table: pa.Table, with_token_vectors: bool) -> Iterator[tuple[str, str, str, tuple | None]]:
    """A previous run's Parquet batch -> ``(id, doc_id, key, stored vectors)`` per row (vectors as bytes, copied
    from Arrow through numpy without Python lists; None without the vector column)."""
    n = table.num_rows
    ids = table.column("id").to_pylist()
    doc_ids = table.column("doc_id").to_pylist()
    keys = table.column("key").to_pylist()
    if "sentence_vector" not in table.column_names:
        for i in range(n):
            yield ids[i], doc_ids[i], keys[i], None
        return
    vectors = table.column("sentence_vector").combine_chunks()
    flat = np.asarray(vectors.flatten().to_numpy(zero_copy_only=False)).reshape(n, vectors.type.list_size)
    dtype = flat.dtype.str
    token_values = offsets = None
    if with_token_vectors:
        column = table.column("token_vectors").combine_chunks()
        offsets = np.asarray(column.offsets).tolist()
        item_type = column.type.value_type
        items = column.values
        shape = []
        while pa.types.is_fixed_size_list(item_type):
            shape.append(item_type.list_size)
            items = items.flatten()
            item_type = item_type.value_type
        token_values = np.asarray(items.to_numpy(zero_copy_only=False)).reshape(-1, *shape)
    for i in range(n):
        token_bytes = token_shape = None
        if token_values is not None:
            tokens = token_values[offsets[i] : offsets[i + 1]]
            token_bytes, token_shape = tokens.tobytes(), tokens.shape
        yield ids[i], doc_ids[i], keys[i], (ids[i], flat[i].tobytes(), dtype, token_bytes, token_shape)


class _SmallestIdFn(beam.CombineFn):
    """Keeps the stored vectors of the smallest sentence id (a deterministic choice among equal keys)."""

    def create_accumulator(self):
        return None

    def add_input(self, best, value: tuple):
        return value if best is None or value[0] < best[0] else best

    def merge_accumulators(self, accumulators):
        found = [a for a in accumulators if a is not None]
        return min(found, key=lambda v: v[0]) if found else None

    def extract_output(self, best):
        return best


class _CompareDocumentFn(beam.DoFn):
    """(doc_id, [(NOW, unit) | (PREV, (id, key))]) -> (key, (NOW, (doc_id, sentence_index, unchanged, windows))) per
    sentence of this run (``unchanged``: the previous run held its id with its key); tagged ``deleted`` ids (held
    by the previous run, absent now) and ``status``, the document's ('documents_<status>', 1)."""

    def __init__(self):
        self._deleted = counter("sentences_deleted")

    def process(self, element):
        doc_id, tagged = element
        units = []
        previous = {}
        for tag, value in tagged:
            if tag == NOW:
                units.append(value)
            else:
                previous[value[0]] = value[1]
        ids = set()
        unchanged_count = 0
        for sid, _, s, key, windows in units:
            ids.add(sid)
            unchanged = previous.get(sid) == key
            unchanged_count += unchanged
            yield key, (NOW, (doc_id, s, unchanged, windows))
        for sid in sorted(previous.keys() - ids):  # sorted: the same delete/ file whatever the hash seed
            self._deleted.inc()
            yield beam.pvalue.TaggedOutput("deleted", sid)
        if not units:
            status = "documents_deleted"
        elif not previous:
            status = "documents_new"
        elif len(previous) == len(units) == unchanged_count:
            status = "documents_unchanged"
        else:
            status = "documents_changed"
        yield beam.pvalue.TaggedOutput("status", (status, 1))


class _CarryOrEmbedFn(beam.DoFn):
    """(key, [(NOW, (doc_id, s, unchanged, windows)) | (PREV, stored vectors)]) -> a carried sentence per unit
    when the key was stored, else the unit's windows (tagged ``embed``)."""

    def __init__(self):
        self._carried = counter("sentences_carried")
        self._to_embed = counter("sentences_to_embed")

    def process(self, element):
        key, tagged = element
        stored = None
        units = []
        for tag, value in tagged:
            if tag == NOW:
                units.append(value)
            elif value is not None:
                stored = value  # one: the previous rows were reduced to one per key
        for doc_id, s, unchanged, windows in units:
            if stored is None:
                self._to_embed.inc()
                window_tokens = pickle.loads(windows)
                for w, tokens in enumerate(window_tokens):
                    window = SentenceWindow(doc_id, s, w, tokens, len(window_tokens))
                    yield beam.pvalue.TaggedOutput("embed", window)
            else:
                self._carried.inc()
                yield doc_id, s, key, unchanged, stored


class ReadPreviousRun(beam.PTransform):
    """PBegin -> PCollection[(id, doc_id, key, stored vectors | None)]: every sentence row of a previous run's
    Parquet shards, read by the workers (split by Beam's Parquet source), vectors only when they are to be
    carried."""

    def __init__(self, files: Iterable[str], with_vectors: bool, with_token_vectors: bool):
        super().__init__()
        self._files = list(files)
        self._with_token_vectors = with_vectors and with_token_vectors
        self._columns = list(PREVIOUS_COLUMNS if with_vectors else PREVIOUS_COLUMNS[:3])
        if self._with_token_vectors:
            self._columns.append("token_vectors")

    def expand(self, pbegin):
        return (
            pbegin
            | "PreviousShards" >> beam.Create(self._files)
            | "ReadParquet" >> ReadAllFromParquetBatched(columns=self._columns)
            | "Rows" >> beam.FlatMap(table_rows, self._with_token_vectors)
        )


class MatchPrevious(beam.PTransform):
    """{'units': PCollection[unit tuple], 'previous': PCollection[(id, doc_id, key, stored vectors)]}
    -> (PCollection[carried sentence tuple], PCollection[SentenceWindow] to embed, PCollection[str deleted id],
    PCollection[(count name, 1)] document statuses).

    Two keyed joins. By document (a sentence id belongs to one document): which sentences are unchanged (same id,
    same key), which previous ids are gone, and each document's status. By key: a unit whose key the previous run
    stored is carried, the others are embedded. With ``carry=False`` (other vector settings, or ``--full``) every
    unit is embedded. Each join is one Flatten of inputs keyed and tagged by the step that makes them (one coder for
    all) and one GroupByKey: ``CoGroupByKey`` without its per-input tagging steps.
    """

    def __init__(self, carry: bool):
        super().__init__()
        self._carry = carry

    def expand(self, inputs):
        units, previous = inputs["units"], inputs["previous"]
        by_document = (
            units | "UnitsByDocument" >> beam.Map(lambda u: (u[1], (NOW, u))).with_output_types(KEYED),
            previous
            | "PreviousByDocument" >> beam.Map(lambda r: (r[1], (PREV, (r[0], r[2])))).with_output_types(KEYED),
        )
        compared = (
            by_document
            | "JoinByDocument/Flatten" >> beam.Flatten()
            | "JoinByDocument/GroupByKey" >> beam.GroupByKey()
            | "CompareDocument"
            >> beam.ParDo(_CompareDocumentFn()).with_output_types(KEYED).with_outputs("deleted", "status", main="units")
        )
        if self._carry:
            stored = (
                previous
                | "StoredByKey" >> beam.Map(lambda r: (r[2], r[3])).with_output_types(KEYED)
                | "OnePerKey" >> beam.CombinePerKey(_SmallestIdFn())
                | "TagStored" >> beam.Map(lambda kv: (kv[0], (PREV, kv[1]))).with_output_types(KEYED)
            )
        else:
            stored = previous | "NothingStored" >> beam.FlatMap(lambda _: ()).with_output_types(KEYED)
        split = (
            (compared.units, stored)
            | "JoinByKey/Flatten" >> beam.Flatten()
            | "JoinByKey/GroupByKey" >> beam.GroupByKey()
            | "CarryOrEmbed" >> beam.ParDo(_CarryOrEmbedFn()).with_outputs("embed", main="carried")
        )
        return split.carried, split.embed, compared.deleted, compared.status
