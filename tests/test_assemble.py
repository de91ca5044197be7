"""AssembleSentences by sentence (issue 12): no grouping holds more than one sentence, a document of thousands of
sentences gives exactly its records, and a document is embedded whole or dead-lettered whole."""

from __future__ import annotations

import json
import pickle

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from elmo.tokenize import Tokenizer
from tests.beam_testing import (
    TINY_MODEL,
    local_pipeline,
    restore_torch_threads,  # noqa: F401  (autouse fixture)
    run_job,
)
from transforms import assemble
from transforms.assemble import AssembleSentences
from transforms.embed import EmbedWindows
from transforms.model_handler import ElmoModelHandler
from transforms.records import Document, WindowVectors
from transforms.tokenize import WindowsOf, document_windows, tokenize_document

BIG_SENTENCES = 3000
PROBE = "test_assemble"  # metrics namespace of the probes below


def _sentences(prefix: str, n: int) -> str:
    return " ".join(f"{prefix} {i} is short." for i in range(n))


def test_a_document_of_3000_sentences_gives_exactly_its_records(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "big.txt").write_text(_sentences("Sentence", BIG_SENTENCES) + "\nA small sibling. And its second.\n")
    run_dir = run_job(tmp_path / "out", input_glob=str(inputs / "*"))

    table = pa.concat_tables(pq.read_table(f) for f in sorted((run_dir / "sentences").glob("*.parquet")))
    rows = sorted(table.select(["id", "doc_id", "sentence_index", "text"]).to_pylist(), key=lambda r: r["id"])
    big = [r for r in rows if r["doc_id"] == "big.txt:1"]
    assert sorted(r["sentence_index"] for r in big) == list(range(BIG_SENTENCES))
    assert len({r["id"] for r in big}) == BIG_SENTENCES
    assert all(r["id"] == f"big.txt:1#{r['sentence_index']}" for r in big)
    assert all(r["text"] == f"Sentence {r['sentence_index']} is short." for r in big)
    assert [r["text"] for r in rows if r["doc_id"] == "big.txt:2"] == ["A small sibling.", "And its second."]
    assert len(rows) == BIG_SENTENCES + 2

    vertex = [json.loads(line) for f in (run_dir / "vertex").glob("*.json") for line in f.read_text().splitlines()]
    assert sorted(v["id"] for v in vertex) == sorted(r["id"] for r in rows)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    counts = manifest["counts"]
    assert manifest["reconciled"] is True
    assert counts["documents_read"] == counts["documents_embedded"] == 2
    assert counts["sentences"] == counts["windows"] == BIG_SENTENCES + 2
    assert (run_dir / "errors" / "part-00000-of-00001.jsonl").read_text() == ""


# Probes: the DoFns that read a grouping's output, wrapped to record how many values one key holds (Beam metrics,
# so the runner carries them back whatever process ran the bundle). Module-level, so Beam pickles them by name.
_ASSEMBLE_PROCESS = assemble._AssembleSentenceFn.process
_RELEASED = assemble._released
_ADD_INPUT = assemble._DocumentVerdictFn.add_input


def _probed_process(self, element):
    key, values = element
    values = list(values)
    Metrics.distribution(PROBE, "by_sentence_values").update(len(values))
    Metrics.distribution(PROBE, "by_sentence_bytes").update(len(pickle.dumps(values)))
    Metrics.counter(PROBE, "by_sentence_keys_with_hash").inc(int("#" in key))
    Metrics.counter(PROBE, "by_sentence_keys").inc()
    return _ASSEMBLE_PROCESS(self, (key, values))


def _probed_released(element):
    key, values = element
    values = list(values)
    Metrics.distribution(PROBE, "release_values").update(len(values))
    Metrics.counter(PROBE, "release_keys_with_hash").inc(int("#" in key))
    Metrics.counter(PROBE, "release_keys").inc()
    return _RELEASED((key, values))


def _probed_add_input(self, acc, part):
    acc = _ADD_INPUT(self, acc, part)
    Metrics.distribution(PROBE, "verdict_bytes").update(len(pickle.dumps(acc)))
    return acc


def _embedded(model_handler: ElmoModelHandler, tokenized: list) -> list[WindowVectors]:
    model = model_handler.load_model()
    windows = [w for t in tokenized for w in document_windows(t)]
    return list(model_handler.run_inference(windows, model))


def test_every_grouping_holds_one_sentence_whatever_the_document_size(monkeypatch):
    monkeypatch.setattr(assemble._AssembleSentenceFn, "process", _probed_process)
    monkeypatch.setattr(assemble, "_released", _probed_released)
    monkeypatch.setattr(assemble._DocumentVerdictFn, "add_input", _probed_add_input)
    tokenizer = Tokenizer.from_json((TINY_MODEL / "tokenizer.json").read_text())
    docs = [
        tokenize_document(Document("big", _sentences("Big", 400), "s.txt", 1), tokenizer, 8, 2),
        tokenize_document(Document("long", " ".join(["w"] * 30) + ". And then.", "s.txt", 2), tokenizer, 8, 2),
        tokenize_document(Document("failed", _sentences("Lost", 50), "s.txt", 3), tokenizer, 8, 2),
    ]
    handler = ElmoModelHandler(str(TINY_MODEL), layers="top", device="cpu")
    vectors = [v for v in _embedded(handler, docs) if not (v.doc_id == "failed" and v.sentence_index == 7)]
    windows_of_long = len(docs[1].windows[0])
    assert windows_of_long > 1

    with local_pipeline() as p:
        inputs = {
            "doc": p | "Docs" >> beam.Create(docs),
            "vectors": p | "Vectors" >> beam.Create(vectors),
            "failed": p | "Failed" >> beam.Create([("failed", "inference failed: boom")]),
        }
        records, stats, errors = inputs | AssembleSentences("top", "float32", "f" * 16, with_token_vectors=True)
        assert_that(
            records | beam.Map(lambda r: r["doc_id"]) | beam.combiners.Count.PerElement(),
            equal_to([("big", 400), ("long", 2)]),
        )
        assert_that(stats | beam.Map(lambda s: (s.doc_id, s.sentences)), equal_to([("big", 400), ("long", 2)]), "s")
        assert_that(errors | beam.Map(lambda e: e["id"]), equal_to(["failed"]), label="errors")
    result = p.result
    metrics = result.metrics().query(MetricsFilter().with_namespace(PROBE))
    dist = {m.key.metric.name: m.committed for m in metrics["distributions"]}
    count = {m.key.metric.name: m.committed for m in metrics["counters"]}

    n_sentences = 400 + 2 + 50
    # by sentence id: one shell + its windows' vectors, never a document
    assert count["by_sentence_keys"] == count["by_sentence_keys_with_hash"] == n_sentences
    assert dist["by_sentence_values"].max == 1 + windows_of_long
    assert dist["by_sentence_bytes"].max < 20_000  # one sentence of <= 31 tokens, token vectors included
    # release by sentence id: a record and/or the flag of its failed document
    assert count["release_keys"] == count["release_keys_with_hash"] == n_sentences
    assert dist["release_values"].max <= 2
    # the verdicts: a fixed-size accumulator, the same for 400 sentences as for 2
    assert dist["verdict_bytes"].max < 600


class _ExplodingHandler(ElmoModelHandler):
    """Fails every batch holding the token BOOM."""

    def run_inference(self, batch, model, inference_args=None):
        if any("BOOM" in w.tokens for w in batch):
            raise RuntimeError("simulated device failure")
        return super().run_inference(batch, model, inference_args)


@pytest.mark.parametrize("with_token_vectors", [False, True])
def test_a_document_with_one_failed_window_is_dead_lettered_whole_and_its_siblings_are_embedded(with_token_vectors):
    tokenizer = Tokenizer.from_json((TINY_MODEL / "tokenizer.json").read_text())
    texts = {
        "before": "A sibling before it. With two sentences.",
        "mixed": _sentences("Fine", 20) + " Then BOOM goes one. " + _sentences("Also fine", 20),
        "after": "A sibling after it.",
    }
    docs = [tokenize_document(Document(i, t, "s.txt", n), tokenizer, 8, 2) for n, (i, t) in enumerate(texts.items())]
    handler = _ExplodingHandler(str(TINY_MODEL), layers="average", device="cpu", max_batch_tokens=2)  # 1 window
    with local_pipeline() as p:
        tokenized = p | beam.Create(docs)
        vectors, failed = tokenized | WindowsOf() | EmbedWindows(handler)
        inputs = {"doc": tokenized, "vectors": vectors, "failed": failed}
        records, stats, errors = inputs | AssembleSentences("average", "float16", "f" * 16, with_token_vectors)
        assert_that(
            records | beam.Map(lambda r: (r["id"], r["text"], r["sentence_vector"].dtype == np.float16)),
            equal_to(
                [
                    ("before#0", "A sibling before it.", True),
                    ("before#1", "With two sentences.", True),
                    ("after#0", "A sibling after it.", True),
                ]
            ),
        )
        assert_that(
            stats | beam.Map(lambda s: (s.doc_id, s.sentences, s.windows)),
            equal_to([("before", 2, 2), ("after", 1, 1)]),
            label="stats",
        )
        assert_that(
            errors | beam.Map(lambda e: (e["id"], e["stage"], e["reason"], e["line"], e["excerpt"])),
            equal_to(
                [
                    (
                        "mixed",
                        "embed",
                        "inference failed: RuntimeError: simulated device failure",
                        1,
                        texts["mixed"][:200],
                    )
                ]
            ),
            label="errors",
        )


def test_carried_sentences_take_their_stored_vectors_next_to_embedded_ones():
    tokenizer = Tokenizer.from_json((TINY_MODEL / "tokenizer.json").read_text())
    doc = tokenize_document(Document("d", "Kept from yesterday. New today.", "s.txt", 1), tokenizer, 8, 2)
    handler = ElmoModelHandler(str(TINY_MODEL), layers="all", device="cpu")
    fresh = [v for v in _embedded(handler, [doc]) if v.sentence_index == 1]
    n0 = doc.sentence_tokens[0][1] - doc.sentence_tokens[0][0]
    stored_tokens = np.arange(n0 * 3 * 32, dtype=np.float16).reshape(n0, 3, 32)  # as stored: (T, L+1, W)
    stored_vector = np.full(32, 0.5, dtype=np.float16)
    stored = ("d#0", stored_vector.tobytes(), "<f2", stored_tokens.tobytes(), stored_tokens.shape)
    carried = ("d", 0, "k" * 32, False, stored)  # the wire form MatchPrevious gives

    def check(records):
        by_id = {r["id"]: r for r in records}
        assert sorted(by_id) == ["d#0", "d#1"]
        kept, new = by_id["d#0"], by_id["d#1"]
        assert kept["key"] == "k" * 32 and kept["changed"] is True and kept["text"] == "Kept from yesterday."
        np.testing.assert_array_equal(kept["sentence_vector"], stored_vector)
        np.testing.assert_array_equal(kept["token_vectors"], stored_tokens.transpose(1, 0, 2))
        assert new["token_vectors"].shape == (3, len(new["tokens"]), 32) and new["token_vectors"].dtype == np.float16
        assert json.loads(new["vertex_json"])["id"] == "d#1"

    with local_pipeline() as p:
        inputs = {
            "doc": p | "Docs" >> beam.Create([doc]),
            "vectors": p | "Vectors" >> beam.Create(fresh),
            "failed": p | "Failed" >> beam.Create([]),
            "carried": p | "Carried" >> beam.Create([carried]),
        }
        records, stats, errors = inputs | AssembleSentences("all", "float16", "f" * 16, True, digest="0" * 16)
        assert_that(records, check)
        assert_that(
            stats | beam.Map(lambda s: (s.doc_id, s.sentences, s.windows, s.carried)),
            equal_to([("d", 2, 1, 1)]),
            label="stats",
        )
        assert_that(errors, equal_to([]), label="errors")


def _sentence_vector_bytes(records, label: str):
    return records | label >> beam.Map(
        lambda r: (r["id"], (r["sentence_vector"].dtype.str, r["sentence_vector"].tobytes()))
    )


@pytest.mark.parametrize("layers", ["average", "all"])
def test_without_token_vectors_a_whole_sentence_window_crosses_the_join_as_its_sentence_vector_same_bits(layers):
    tokenizer = Tokenizer.from_json((TINY_MODEL / "tokenizer.json").read_text())
    docs = [
        tokenize_document(Document("short", _sentences("Short", 30), "s.txt", 1), tokenizer, 8, 2),
        tokenize_document(Document("long", " ".join(["w"] * 30) + ". And then.", "s.txt", 2), tokenizer, 8, 2),
    ]
    handler = ElmoModelHandler(str(TINY_MODEL), layers=layers, device="cpu")
    vectors = _embedded(handler, docs)
    assert {v.sentence_windows for v in vectors} == {1, len(docs[1].windows[0])} and len(docs[1].windows[0]) > 1

    # what crosses the join: the (W,) sentence vector of a one-window sentence, a long sentence's windows whole
    for v in vectors:
        _, (tag, (window, data, shape, *rest)) = assemble._vectors_wire(v, reduce_whole_sentences=True)
        if v.sentence_windows == 1:
            assert (tag, window, shape, len(data)) == (assemble.SENTENCE_VECTOR, 0, (32,), 32 * 4)
            assert rest[1] == v.vectors.shape[-2]  # the window's token count
        else:
            assert (tag, shape, len(data)) == (assemble.VECTORS, v.vectors.shape, v.vectors.nbytes)
        _, (tag, (_, data, _, _)) = assemble._vectors_wire(v, reduce_whole_sentences=False)
        assert tag == assemble.VECTORS and len(data) == v.vectors.nbytes

    # the same records' sentence vectors, bit for bit, as when the token vectors are kept (nothing reduced early)
    with local_pipeline() as p:
        inputs = {
            "doc": p | "Docs" >> beam.Create(docs),
            "vectors": p | "Vectors" >> beam.Create(vectors),
            "failed": p | "Failed" >> beam.Create([]),
        }
        reduced, _, _ = inputs | "Reduced" >> AssembleSentences(layers, "float32", "f" * 16, False)
        full, _, _ = inputs | "Full" >> AssembleSentences(layers, "float32", "f" * 16, True)
        both = (
            {"reduced": _sentence_vector_bytes(reduced, "R"), "full": _sentence_vector_bytes(full, "F")}
            | beam.CoGroupByKey()
            | beam.Map(lambda kv: (len(kv[1]["full"]), kv[1]["reduced"] == kv[1]["full"]))
        )
        assert_that(both, equal_to([(1, True)] * (30 + 2)))


def test_a_sentence_vector_for_a_sentence_of_several_windows_is_refused():
    tokenizer = Tokenizer.from_json((TINY_MODEL / "tokenizer.json").read_text())
    doc = tokenize_document(Document("long", " ".join(["w"] * 30) + ".", "s.txt", 1), tokenizer, 8, 2)
    shell = assemble.sentence_shells(doc)[0]
    with pytest.raises(ValueError, match="came as one sentence vector, but it has"):
        reduced = assemble.ReducedSentence(np.zeros(32, np.float32), len(shell.tokens))
        assemble.sentence_record(shell, {}, "top", "float32", "f" * 16, False, reduced=reduced)


def test_a_sentence_vector_from_a_window_of_another_token_count_is_refused():
    tokenizer = Tokenizer.from_json((TINY_MODEL / "tokenizer.json").read_text())
    doc = tokenize_document(Document("short", "Three short words.", "s.txt", 1), tokenizer, 8, 2)
    shell = assemble.sentence_shells(doc)[0]
    assert len(shell.spans) == 1
    good = assemble.ReducedSentence(np.ones(32, np.float32), len(shell.tokens))
    record = assemble.sentence_record(shell, {}, "top", "float32", "f" * 16, False, reduced=good)
    assert record["sentence_vector"].tolist() == [1.0] * 32
    bad = assemble.ReducedSentence(np.ones(32, np.float32), len(shell.tokens) + 1)
    with pytest.raises(ValueError, match=f"has {len(shell.tokens)} tokens, but its vector came from"):
        assemble.sentence_record(shell, {}, "top", "float32", "f" * 16, False, reduced=bad)
