"""Character ids: UTF-8 bytes, markers, +1 offset, 48-byte truncation, zero padding tokens."""

from __future__ import annotations

import numpy as np

from elmo.chars import batch_to_ids, token_to_ids, tokens_to_ids


def test_ascii_token():
    ids = token_to_ids("cat")
    assert ids.shape == (50,)
    assert list(ids[:6]) == [259, ord("c") + 1, ord("a") + 1, ord("t") + 1, 260, 261]
    assert (ids[5:] == 261).all()


def test_sentence_markers_and_literal_marker_tokens():
    assert list(token_to_ids("<S>")[:4]) == [259, 257, 260, 261]
    assert list(token_to_ids("</S>")[:4]) == [259, 258, 260, 261]


def test_multibyte_and_truncation_at_48_bytes():
    ids = token_to_ids("é")
    assert list(ids[:4]) == [259, 0xC3 + 1, 0xA9 + 1, 260]
    long = "é" * 30  # 60 bytes: cut to 48, i.e. 24 whole characters
    ids = token_to_ids(long)
    assert ids[49] == 260 and ids[48] == 0xA9 + 1
    odd = "x" + "é" * 30  # the 48th byte splits a character, as in the originals
    assert token_to_ids(odd)[48] == 0xC3 + 1


def test_batch_is_right_padded_with_zero_tokens():
    ids = batch_to_ids([["a", "b", "c"], ["d"], []])
    assert ids.shape == (3, 3, 50)
    assert (ids[1, 1:] == 0).all() and (ids[2] == 0).all()
    np.testing.assert_array_equal(ids[1, 0], token_to_ids("d"))
    assert batch_to_ids([]).shape == (0, 0, 50)


def _ids_one_by_one(sentences, width=50):
    """The plain per-token construction (the spec, docs/elmo-format.md), as an oracle for the array version."""
    t_max = max((len(s) for s in sentences), default=0)
    out = np.zeros((len(sentences), t_max, width), dtype=np.int64)
    for row, sentence in enumerate(sentences):
        for col, token in enumerate(sentence):
            if token in ("<S>", "</S>"):
                ids = [258, 256 if token == "<S>" else 257, 259] + [260] * (width - 3)
            else:
                data = list(token.encode("utf-8", "ignore")[: width - 2])
                ids = [258, *data, 259] + [260] * (width - 2 - len(data))
            out[row, col] = np.asarray(ids) + 1
    return out


def test_batch_ids_equal_the_token_by_token_construction():
    long = "x" + "é" * 30  # cut inside a character
    sentences = [
        ["The", "bank", "of", "the", "river", "bank", "."],
        ["<S>", "é", "日本語", long, "a" * 48, "b" * 49, "</S>"],
        ["lone\ud800surrogate", "\U0001f600", "<S/>", "bank"],
        [],
        ["a"],
    ]
    for width in (50, 12):
        np.testing.assert_array_equal(batch_to_ids(sentences, width), _ids_one_by_one(sentences, width))
    np.testing.assert_array_equal(tokens_to_ids(["bank", "<S>"]), _ids_one_by_one([["bank", "<S>"]])[0])
    assert tokens_to_ids([]).shape == (0, 50)
