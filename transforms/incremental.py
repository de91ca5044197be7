"""Nightly re-embedding: reuse a previous run's vectors by sentence content, list what changed and what vanished.

In the deterministic (fixed initial state) mode a sentence's vectors depend only on its tokens and on the settings
that change vectors, so every sentence is keyed by ``sentence_key(settings_digest, tokens)``. A run given a previous
run joins, inside the job (keyed joins the runner distributes, never a table in one process):

1. by sentence id (``<doc_id>#<i>``): which ids are unchanged (same key as before), which are new or changed (an
   upsert for a vector index), and which previous ids are gone (deleted);
2. by key: a sentence whose key the previous run holds takes the stored vectors (one previous row per key, the one
   with the smallest id, so the choice is deterministic); the others are embedded.

The light joins carry ids, keys and tokens; the previous vectors cross one shuffle, keyed by sentence key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.parquetio import ReadAllFromParquetBatched

from transforms.metrics import counter
from transforms.records import SentenceWindow, TokenizedDocument

KEY_HEX = 32  # 128 bits of sha256: no collision among 10^12 sentences in practice
PREVIOUS_COLUMNS = ("id", "doc_id", "key", "sentence_vector")


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


@dataclass(frozen=True)
class SentenceUnit:
    """One sentence to embed or to carry: its key and its inference windows."""

    doc_id: str
    sentence_index: int
    key: str
    windows: tuple[SentenceWindow, ...]
    unchanged: bool = False  # the previous run held this id with this key (no upsert needed)

    @property
    def id(self) -> str:
        return sentence_id(self.doc_id, self.sentence_index)


@dataclass(frozen=True)
class StoredVectors:
    """A previous run's vectors of one sentence, in the run's dtype."""

    id: str
    sentence_vector: np.ndarray  # (W,)
    token_vectors: np.ndarray | None  # (T, W) or (T, L+1, W) as stored per token; None without --token_vectors


@dataclass(frozen=True)
class CarriedSentence:
    """A sentence whose vectors come from the previous run."""

    doc_id: str
    sentence_index: int
    sentence_vector: np.ndarray
    token_vectors: np.ndarray | None
    unchanged: bool


def sentence_units(tokenized: TokenizedDocument, digest: str) -> list[SentenceUnit]:
    """Every sentence of a document with its key and windows."""
    doc_id = tokenized.doc.doc_id
    units = []
    for s, ((first, last), spans) in enumerate(zip(tokenized.sentence_tokens, tokenized.windows, strict=True)):
        tokens = tokenized.tokens[first:last]
        windows = tuple(SentenceWindow(doc_id, s, w, tokens[a:b]) for w, (a, b) in enumerate(spans))
        units.append(SentenceUnit(doc_id, s, sentence_key(digest, tokens), windows))
    return units


def table_rows(table: pa.Table, with_token_vectors: bool) -> Iterator[tuple[str, str, str, StoredVectors]]:
    """A previous run's Parquet batch -> ``(id, doc_id, key, StoredVectors)`` per row (vectors copied to numpy
    without Python lists)."""
    n = table.num_rows
    flat: list[np.ndarray | None] | np.ndarray = [None] * n
    if "sentence_vector" in table.column_names:
        vectors = table.column("sentence_vector").combine_chunks()
        dim = vectors.type.list_size
        flat = np.asarray(vectors.flatten().to_numpy(zero_copy_only=False)).reshape(n, dim)
    per_row_tokens: list[np.ndarray | None] = [None] * n
    if with_token_vectors:
        column = table.column("token_vectors").combine_chunks()
        offsets = np.asarray(column.offsets)
        item_type = column.type.value_type
        items = column.values
        shape = []
        while pa.types.is_fixed_size_list(item_type):
            shape.append(item_type.list_size)
            items = items.flatten()
            item_type = item_type.value_type
        values = np.asarray(items.to_numpy(zero_copy_only=False)).reshape(-1, *shape)
        per_row_tokens = [values[offsets[i] : offsets[i + 1]] for i in range(n)]
    ids = table.column("id").to_pylist()
    doc_ids = table.column("doc_id").to_pylist()
    keys = table.column("key").to_pylist()
    for i in range(n):
        vector = flat[i].copy() if flat[i] is not None else None
        yield ids[i], doc_ids[i], keys[i], StoredVectors(ids[i], vector, per_row_tokens[i])


class _SmallestIdFn(beam.CombineFn):
    """Keeps the stored vectors of the smallest sentence id (a deterministic choice among equal keys)."""

    def create_accumulator(self):
        return None

    def add_input(self, best, value: StoredVectors):
        return value if best is None or value.id < best.id else best

    def merge_accumulators(self, accumulators):
        found = [a for a in accumulators if a is not None]
        return min(found, key=lambda v: v.id) if found else None

    def extract_output(self, best):
        return best


class _MarkUnchangedFn(beam.DoFn):
    """(id, {'now': [SentenceUnit], 'prev': [key]}) -> units marked unchanged or not; tagged ``deleted`` ids."""

    def __init__(self):
        self._deleted = counter("sentences_deleted")

    def process(self, element):
        sid, grouped = element
        previous_keys = set(grouped["prev"])
        units = list(grouped["now"])
        if not units:
            self._deleted.inc()
            yield beam.pvalue.TaggedOutput("deleted", sid)
            return
        for unit in units:  # one: ids are unique within a run
            yield SentenceUnit(unit.doc_id, unit.sentence_index, unit.key, unit.windows, unit.key in previous_keys)


class _CarryOrEmbedFn(beam.DoFn):
    """(key, {'now': [SentenceUnit], 'prev': [StoredVectors]}) -> CarriedSentence per unit when the key was stored,
    else the unit's windows (tagged ``embed``)."""

    def __init__(self):
        self._carried = counter("sentences_carried")
        self._to_embed = counter("sentences_to_embed")

    def process(self, element):
        _, grouped = element
        stored = next(iter(grouped["prev"]), None)
        for unit in grouped["now"]:
            if stored is None:
                self._to_embed.inc()
                for window in unit.windows:
                    yield beam.pvalue.TaggedOutput("embed", window)
            else:
                self._carried.inc()
                yield CarriedSentence(
                    unit.doc_id, unit.sentence_index, stored.sentence_vector, stored.token_vectors, unit.unchanged
                )


class _DocumentStatusFn(beam.DoFn):
    """(doc_id, {'now': [(n_sentences, n_unchanged)], 'prev': [n_sentences]}) -> ('documents_<status>', 1)."""

    def process(self, element):
        _, grouped = element
        now = list(grouped["now"])
        previous = sum(grouped["prev"])
        if not now:
            yield ("documents_deleted", 1)
        elif not previous:
            yield ("documents_new", 1)
        elif now[0][0] == previous and now[0][1] == now[0][0]:
            yield ("documents_unchanged", 1)
        else:
            yield ("documents_changed", 1)


class ReadPreviousRun(beam.PTransform):
    """PBegin -> PCollection[(id, doc_id, key, StoredVectors)]: every sentence row of a previous run's Parquet
    shards, read by the workers (split by Beam's Parquet source), vectors only when they are to be carried."""

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
    """{'units': PCollection[SentenceUnit], 'previous': PCollection[(id, doc_id, key, StoredVectors)]}
    -> (PCollection[CarriedSentence], PCollection[SentenceWindow] to embed, PCollection[str deleted id],
    PCollection[(count name, 1)] document statuses).

    Units carry ``unchanged`` after the id join; the key join then carries or embeds each unit. With
    ``carry=False`` (other vector settings, or ``--full``) every unit is embedded.
    """

    def __init__(self, carry: bool):
        super().__init__()
        self._carry = carry

    def expand(self, inputs):
        units, previous = inputs["units"], inputs["previous"]
        by_id = {
            "now": units | "UnitsById" >> beam.Map(lambda u: (u.id, u)),
            "prev": previous | "PreviousKeysById" >> beam.Map(lambda r: (r[0], r[2])),
        }
        marked = (
            by_id
            | "JoinById" >> beam.CoGroupByKey()
            | "MarkUnchanged" >> beam.ParDo(_MarkUnchangedFn()).with_outputs("deleted", main="units")
        )
        if self._carry:
            stored = (
                previous
                | "StoredByKey" >> beam.Map(lambda r: (r[2], r[3]))
                | "OnePerKey" >> beam.CombinePerKey(_SmallestIdFn())
            )
        else:
            stored = previous | "NothingStored" >> beam.Filter(lambda _: False) | beam.Map(lambda r: (r[2], r[3]))
        by_key = {"now": marked.units | "UnitsByKey" >> beam.Map(lambda u: (u.key, u)), "prev": stored}
        split = (
            by_key
            | "JoinByKey" >> beam.CoGroupByKey()
            | "CarryOrEmbed" >> beam.ParDo(_CarryOrEmbedFn()).with_outputs("embed", main="carried")
        )
        per_doc = {
            "now": marked.units
            | "UnitStatus" >> beam.Map(lambda u: (u.doc_id, (1, int(u.unchanged))))
            | "PerDocument" >> beam.CombinePerKey(lambda pairs: tuple(map(sum, zip(*pairs, strict=True)))),
            "prev": previous
            | "PreviousDocs" >> beam.Map(lambda r: (r[1], 1))
            | "PreviousPerDoc" >> beam.CombinePerKey(sum),
        }
        statuses = (
            per_doc | "JoinByDocument" >> beam.CoGroupByKey() | "DocumentStatus" >> beam.ParDo(_DocumentStatusFn())
        )
        return split.carried, split.embed, marked.deleted, statuses
