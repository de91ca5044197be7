"""ElmoModelHandler called directly, EmbedWindows through RunInference, and AssembleSentences (window merging)."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from elmo import Elmo
from elmo.tokenize import Tokenizer
from elmo.windows import window_owners
from tests.beam_testing import (
    TINY_MODEL,
    local_pipeline,
    restore_torch_threads,  # noqa: F401  (autouse fixture)
)
from transforms.assemble import AssembleSentences
from transforms.embed import EmbedWindows
from transforms.model_handler import ElmoModelHandler
from transforms.records import Document, SentenceWindow
from transforms.tokenize import document_windows, tokenize_document

WINDOWS = [
    SentenceWindow("a", 0, 0, ("The", "cat", "sat", "."), 1),
    SentenceWindow("a", 1, 0, ("It", "was", "warm", "and", "the", "sun", "shone", "all", "day", "."), 1),
    SentenceWindow("b", 0, 0, ("Short",), 1),
    SentenceWindow("b", 1, 0, ("東", "京", "😀", "naïve", "x" * 80), 1),
]


@pytest.fixture(scope="module")
def model() -> Elmo:
    return Elmo.from_directory(TINY_MODEL)


def test_handler_pads_a_ragged_batch_and_matches_elmo_embed(model):
    handler = ElmoModelHandler(str(TINY_MODEL), layers="all", device="cpu", expected_fingerprint=model.fingerprint)
    loaded = handler.load_model()
    out = list(handler.run_inference(WINDOWS, loaded))
    assert [(o.doc_id, o.sentence_index) for o in out] == [(w.doc_id, w.sentence_index) for w in WINDOWS]
    for window, result in zip(WINDOWS, out, strict=True):
        assert result.vectors.shape == (3, len(window.tokens), 32)
        alone = model.embed([list(window.tokens)])[0]
        assert np.abs(result.vectors - alone).max() <= 1e-5
    assert handler.batch_elements_kwargs()["max_batch_weight"] == 2048
    assert handler.batch_elements_kwargs()["element_size_fn"](WINDOWS[1]) == 10


def test_handler_refuses_another_model():
    handler = ElmoModelHandler(str(TINY_MODEL), device="cpu", expected_fingerprint="0000000000000000")
    with pytest.raises(RuntimeError, match="fingerprint"):
        handler.load_model()


def _keyed(results):
    return results | beam.Map(lambda r: ((r.doc_id, r.sentence_index), r.vectors))


@pytest.mark.parametrize("budget", [1, 12, 4096])
def test_embed_windows_any_batch_budget_gives_the_same_vectors(model, budget):
    expected = {(w.doc_id, w.sentence_index): model.embed([list(w.tokens)], layers="top")[0] for w in WINDOWS}

    def check(pairs):
        assert sorted(k for k, _ in pairs) == sorted(expected)
        for key, vectors in pairs:
            assert vectors.shape == expected[key].shape
            assert np.abs(vectors - expected[key]).max() <= 1e-5, key

    handler = ElmoModelHandler(str(TINY_MODEL), layers="top", device="cpu", max_batch_tokens=budget)
    with local_pipeline() as p:
        vectors, failed = p | beam.Create(WINDOWS) | EmbedWindows(handler)
        assert_that(_keyed(vectors), check)
        assert_that(failed, equal_to([]), label="no failures")


class _ExplodingHandler(ElmoModelHandler):
    """Fails every batch holding the token BOOM (a model error the pipeline must survive)."""

    def run_inference(self, batch, model, inference_args=None):
        if any("BOOM" in w.tokens for w in batch):
            raise RuntimeError("simulated device failure")
        return super().run_inference(batch, model, inference_args)


def test_failed_batches_are_dead_lettered_window_by_window():
    windows = [*WINDOWS, SentenceWindow("c", 0, 0, ("BOOM", "here"), 1)]
    handler = _ExplodingHandler(str(TINY_MODEL), device="cpu", max_batch_tokens=2)  # "c" batched alone
    with local_pipeline() as p:
        vectors, failed = p | beam.Create(windows) | EmbedWindows(handler)
        assert_that(
            vectors | beam.Map(lambda v: v.doc_id), equal_to(["a", "a", "b", "b"]), label="the others are embedded"
        )
        assert_that(
            failed, equal_to([("c", "inference failed: RuntimeError: simulated device failure")]), label="dead letter"
        )


def test_assemble_merges_windows_and_dead_letters_incomplete_documents(model):
    text = " ".join(f"w{i}" for i in range(30)) + ". Next one here."
    tokenized = tokenize_document(Document("long", text, "s.txt", 3), Tokenizer(), max_tokens=8, overlap=2)
    broken = tokenize_document(Document("broken", "Its windows get lost.", "s.txt", 4), Tokenizer(), 8, 2)
    failing = tokenize_document(Document("failing", "Its model fails.", "s.txt", 5), Tokenizer(), 8, 2)
    nan = tokenize_document(Document("nan", "Not a number.", "s.txt", 6), Tokenizer(), 8, 2)
    windows = document_windows(tokenized)
    assert len(tokenized.windows[0]) > 1  # the first sentence really is windowed
    per_window = model.embed([list(w.tokens) for w in windows], layers="all")
    vectors = [_window_vectors(w, v) for w, v in zip(windows, per_window, strict=True)]  # as RunInference gives them
    vectors.append(_window_vectors(document_windows(nan)[0], np.full((3, 4, 32), np.nan, dtype=np.float32)))

    def check(records):
        assert [(r["id"], r["n_windows"]) for r in sorted(records, key=lambda r: r["id"])] == [
            ("long#0", len(tokenized.windows[0])),
            ("long#1", 1),
        ]
        first = next(r for r in records if r["id"] == "long#0")
        assert first["tokens"] == [f"w{i}" for i in range(30)] + ["."]
        assert first["text"] == text[: text.index(".") + 1]
        assert first["token_vectors"].shape == (3, 31, 32)
        owners = window_owners(31, tokenized.windows[0])
        for i in (0, 5, 6, 7, 15, 30):  # each token's vector is the one of its most central window
            k = owners[i]
            start = tokenized.windows[0][k][0]
            np.testing.assert_array_equal(first["token_vectors"][:, i], per_window[k][:, i - start])
        np.testing.assert_allclose(first["sentence_vector"], first["token_vectors"].mean(axis=0).mean(axis=0))

    inputs = {
        "doc": beam.Create([tokenized, broken, failing, nan]),
        "vectors": beam.Create(vectors),
        "failed": beam.Create([("failing", "inference failed: boom")]),
    }
    with local_pipeline() as p:
        pcolls = {name: p | f"Create{name}" >> create for name, create in inputs.items()}
        records, stats, errors = pcolls | AssembleSentences("all", "float32", "f" * 16, with_token_vectors=True)
        assert_that(records, check)
        assert_that(stats | beam.Map(lambda s: (s.doc_id, s.sentences, s.tokens)), equal_to([("long", 2, 35)]), "st")
        assert_that(
            errors | beam.Map(lambda e: (e["id"], e["reason"])),
            equal_to(
                [
                    ("broken", "1 of 1 windows came back empty"),
                    ("failing", "inference failed: boom"),
                    ("nan", "assembling failed: ValueError: sentence 0 has a non-finite vector in float32"),
                ]
            ),
            label="errors",
        )


def _window_vectors(window: SentenceWindow, vectors: np.ndarray):
    from transforms.records import WindowVectors

    return WindowVectors(window.doc_id, window.sentence_index, window.window_index, vectors, window.sentence_windows)
