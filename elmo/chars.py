"""Character ids for the char-CNN token encoder, exactly as bilm-tf and AllenNLP build them.

A token becomes ``max_characters_per_token`` (50) ids: begin-of-word, its UTF-8 bytes (at most 48), end-of-word,
then in-token padding. Every id is offset by +1 so that 0 can mean "no token here" (a padded position).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Raw ids, before the +1 offset.
BOS_CHAR = 256  # <begin sentence>
EOS_CHAR = 257  # <end sentence>
BOW_CHAR = 258  # <begin word>
EOW_CHAR = 259  # <end word>
PAD_CHAR = 260  # padding inside a token

BOS_TOKEN = "<S>"
EOS_TOKEN = "</S>"


def _marker_token(char: int, width: int) -> np.ndarray:
    ids = np.full(width, PAD_CHAR, dtype=np.int64)
    ids[:3] = (BOW_CHAR, char, EOW_CHAR)
    return ids + 1


def tokens_to_ids(tokens: Sequence[str], width: int = 50) -> np.ndarray:
    """Char ids (+1 offset) of each token: shape (len(tokens), width), int64, built in a few array operations.

    ``<S>`` and ``</S>`` map to the sentence-boundary pseudo tokens, as in both reference implementations.
    Bytes beyond ``width - 2`` are dropped (this may cut a multi-byte character, as the originals do); text that is
    not valid UTF-8 (a lone surrogate) loses those characters.
    """
    room = width - 2  # bytes between begin- and end-of-word
    data = [token.encode("utf-8", "ignore")[:room] for token in tokens]
    lengths = np.fromiter(map(len, data), dtype=np.intp, count=len(data))  # (U,)
    raw = np.frombuffer(b"".join(d.ljust(room, b"\0") for d in data), dtype=np.uint8).reshape(len(data), room)
    ids = np.full((len(data), width), PAD_CHAR, dtype=np.int64)
    ids[:, 0] = BOW_CHAR
    inside = np.arange(room) < lengths[:, None]  # (U, room): positions holding a byte of the token
    ids[:, 1 : room + 1][inside] = raw[inside]
    ids[np.arange(len(data)), lengths + 1] = EOW_CHAR
    ids += 1
    for row, token in enumerate(tokens):
        if token == BOS_TOKEN:
            ids[row] = _marker_token(BOS_CHAR, width)
        elif token == EOS_TOKEN:
            ids[row] = _marker_token(EOS_CHAR, width)
    return ids


def token_to_ids(token: str, width: int = 50) -> np.ndarray:
    """Char ids (+1 offset) of one token: shape (width,), int64 (``tokens_to_ids`` of one token)."""
    return tokens_to_ids([token], width)[0]


def bos_ids(width: int = 50) -> np.ndarray:
    """Char ids of the ``<S>`` pseudo token, shape (width,)."""
    return _marker_token(BOS_CHAR, width)


def eos_ids(width: int = 50) -> np.ndarray:
    """Char ids of the ``</S>`` pseudo token, shape (width,)."""
    return _marker_token(EOS_CHAR, width)


def batch_to_ids(sentences: Sequence[Sequence[str]], width: int = 50) -> np.ndarray:
    """Char ids of a batch, right-padded with all-zero tokens, without sentence boundaries.

    Returns (B, T_max, width) int64, where T_max is the longest sentence (0 when all are empty). Each distinct
    token's ids are built once, then gathered into place.
    """
    t_max = max((len(s) for s in sentences), default=0)
    distinct: dict[str, int] = {}  # token -> its row in the table below (0: the all-zero padding token)
    rows = np.zeros((len(sentences), t_max), dtype=np.intp)  # (B, T_max)
    for row, sentence in enumerate(sentences):
        rows[row, : len(sentence)] = [distinct.setdefault(token, len(distinct) + 1) for token in sentence]
    table = np.zeros((len(distinct) + 1, width), dtype=np.int64)  # (U + 1, width)
    table[1:] = tokens_to_ids(list(distinct), width)
    return table[rows]
