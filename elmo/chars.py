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


def token_to_ids(token: str, width: int = 50) -> np.ndarray:
    """Char ids (+1 offset) of one token: shape (width,), int64.

    ``<S>`` and ``</S>`` map to the sentence-boundary pseudo tokens, as in both reference implementations.
    Bytes beyond ``width - 2`` are dropped (this may cut a multi-byte character, as the originals do).
    """
    if token == BOS_TOKEN:
        return _marker_token(BOS_CHAR, width)
    if token == EOS_TOKEN:
        return _marker_token(EOS_CHAR, width)
    data = token.encode("utf-8", "ignore")[: width - 2]
    ids = np.full(width, PAD_CHAR, dtype=np.int64)
    ids[0] = BOW_CHAR
    ids[1 : len(data) + 1] = np.frombuffer(data, dtype=np.uint8)
    ids[len(data) + 1] = EOW_CHAR
    return ids + 1


def bos_ids(width: int = 50) -> np.ndarray:
    """Char ids of the ``<S>`` pseudo token, shape (width,)."""
    return _marker_token(BOS_CHAR, width)


def eos_ids(width: int = 50) -> np.ndarray:
    """Char ids of the ``</S>`` pseudo token, shape (width,)."""
    return _marker_token(EOS_CHAR, width)


def batch_to_ids(sentences: Sequence[Sequence[str]], width: int = 50) -> np.ndarray:
    """Char ids of a batch, right-padded with all-zero tokens, without sentence boundaries.

    Returns (B, T_max, width) int64, where T_max is the longest sentence (0 when all are empty).
    """
    t_max = max((len(s) for s in sentences), default=0)
    ids = np.zeros((len(sentences), t_max, width), dtype=np.int64)
    cache: dict[str, np.ndarray] = {}
    for row, sentence in enumerate(sentences):
        for col, token in enumerate(sentence):
            token_ids = cache.get(token)
            if token_ids is None:
                token_ids = cache[token] = token_to_ids(token, width)
            ids[row, col] = token_ids
    return ids
