"""Tokenizer, sentence splitter and windows (elmo.tokenize, elmo.windows) and the TokenizeDocuments stage."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from elmo.tokenize import Tokenizer, TokenizerConfig
from elmo.windows import merge_windows, plan_windows, window_owners
from tests.beam_testing import local_pipeline
from transforms.records import Document
from transforms.tokenize import TokenizeDocuments, WindowsOf, document_windows, tokenize_document

TOKENIZER = Tokenizer()


@pytest.mark.parametrize(
    "text, sentences",
    [
        (
            "Mr. Smith didn't go. He stayed home!",
            [["Mr.", "Smith", "did", "n't", "go", "."], ["He", "stayed", "home", "!"]],
        ),
        ('He said "Stop." Then left.', [["He", "said", '"', "Stop", ".", '"'], ["Then", "left", "."]]),
        (
            "It cost $3.14 in the U.S. on 12/05/2020, etc. and more.",
            [["It", "cost", "$", "3.14", "in", "the", "U.S.", "on", "12/05/2020", ",", "etc.", "and", "more", "."]],
        ),
        ("Wait... what?! Yes.", [["Wait", "...", "what", "?!"], ["Yes", "."]]),
        (
            "see https://example.com/a?b=1. Then a@b.org wrote",
            [["see", "https://example.com/a?b=1", "."], ["Then", "a@b.org", "wrote"]],
        ),
        ("東京は大きい。とても！", [["東", "京", "は", "大", "き", "い", "。"], ["と", "て", "も", "！"]]),
        ("Emoji 😀👍🏽 and 👨‍👩‍👧 here", [["Emoji", "😀👍🏽", "and", "👨‍👩‍👧", "here"]]),
        ("one para\n\nsecond para\nsame", [["one", "para"], ["second", "para", "same"]]),
        (
            "Ελληνικά κείμενα. Русский текст! العربية",
            [["Ελληνικά", "κείμενα", "."], ["Русский", "текст", "!"], ["العربية"]],
        ),
        ("   \t ", []),
    ],
)
def test_sentences_and_tokens(text, sentences):
    got = TOKENIZER.sentences(text)
    assert [s.texts() for s in got] == sentences
    for sentence in got:
        for token in sentence.tokens:
            assert text[token.start : token.end] == token.text  # offsets point into the original text
        assert (sentence.start, sentence.end) == (sentence.tokens[0].start, sentence.tokens[-1].end)


def test_tokenizer_config_round_trip_and_rejects_unknown():
    config = TokenizerConfig(max_sentence_tokens=64, window_overlap=8)
    assert TokenizerConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="does not know"):
        TokenizerConfig.from_json('{"scheme": "ptb-regex", "future_rule": true}')
    with pytest.raises(ValueError, match="scheme"):
        TokenizerConfig(scheme="whitespace")


def test_plan_windows_cover_and_overlap():
    assert plan_windows(5, 8, 2) == [(0, 5)]
    assert plan_windows(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    spans = plan_windows(1000, 256, 32)
    assert spans[0] == (0, 256) and spans[-1] == (744, 1000)
    assert all(end - start == 256 for start, end in spans)
    with pytest.raises(ValueError):
        plan_windows(10, 4, 4)


def test_each_token_takes_the_window_where_it_is_most_central():
    spans = [(0, 4), (3, 7), (6, 10)]
    # token 3: distance to the nearer edge 0 in window 0 and in window 1 -> tie -> the earlier; token 4: window 1
    assert window_owners(10, spans).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    vectors = [np.full((3, end - start, 2), k, dtype=np.float32) for k, (start, end) in enumerate(spans)]
    merged = merge_windows(vectors, spans, 10)  # (3, 10, 2)
    assert merged.shape == (3, 10, 2)
    assert merged[0, :, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_tokenize_document_windows_long_sentences():
    doc = Document("d", "a b c d e f g h i j. Short one.", "s.txt", 1)
    tokenized = tokenize_document(doc, TOKENIZER, max_tokens=4, overlap=1)
    assert tokenized.sentence_tokens == ((0, 11), (11, 14))
    assert tokenized.windows == (((0, 4), (3, 7), (6, 10), (7, 11)), ((0, 3),))
    windows = document_windows(tokenized)
    assert [(w.sentence_index, w.window_index, w.tokens) for w in windows][:2] == [
        (0, 0, ("a", "b", "c", "d")),
        (0, 1, ("d", "e", "f", "g")),
    ]
    assert windows[-1].tokens == ("Short", "one", ".")


def test_tokenize_documents_stage_dead_letters_token_free_documents():
    docs = [Document("ok", "Two tokens", "s.txt", 1), Document("ctrl", "\x01\x02 \t", "s.txt", 2)]
    with local_pipeline() as p:
        tokenized, errors = p | beam.Create(docs) | TokenizeDocuments(TokenizerConfig().to_json(), 4, 1)
        windows = tokenized | WindowsOf()
        assert_that(windows | beam.Map(lambda w: (w.doc_id, w.tokens)), equal_to([("ok", ("Two", "tokens"))]))
        assert_that(
            errors | beam.Map(lambda e: (e["id"], e["stage"], e["reason"])),
            equal_to([("ctrl", "tokenize", "no tokens (only whitespace or control characters)")]),
            label="errors",
        )
