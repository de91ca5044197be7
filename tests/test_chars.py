"""Character ids: UTF-8 bytes, markers, +1 offset, 48-byte truncation, zero padding tokens."""

from __future__ import annotations

import numpy as np

from elmo.chars import batch_to_ids, token_to_ids


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
