"""Long sentences as overlapping windows, and merging the windows' token vectors back into one sentence.

The biLM was trained on sentences up to some length; a longer sentence is not cut but embedded as overlapping
windows of at most ``max_tokens`` tokens. Merging rule: every token takes its vector from the window in which it is
most central, i.e. the window that maximises the distance from the token to the nearer window edge
(``min(i - start, end - 1 - i)``); ties go to the earlier window. Every token thus gets a vector computed with at
least ``overlap // 2`` tokens of context on both sides (except near the sentence's own ends).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def plan_windows(n_tokens: int, max_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """Token spans ``[start, end)`` covering ``n_tokens``: one span when it fits, else windows of exactly
    ``max_tokens`` advancing by ``max_tokens - overlap``, the last one aligned to the sentence end."""
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError(f"need max_tokens >= 1 and 0 <= overlap < max_tokens, got {max_tokens}, {overlap}")
    if n_tokens <= max_tokens:
        return [(0, n_tokens)]
    stride = max_tokens - overlap
    spans = []
    start = 0
    while start + max_tokens < n_tokens:
        spans.append((start, start + max_tokens))
        start += stride
    spans.append((n_tokens - max_tokens, n_tokens))
    return spans


def window_owners(n_tokens: int, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """For each token, the index of the window it takes its vector from (the most central one): (n_tokens,) int."""
    best = np.full(n_tokens, -1, dtype=np.int64)
    owner = np.full(n_tokens, -1, dtype=np.int64)
    for k, (start, end) in enumerate(spans):
        i = np.arange(start, end)
        centrality = np.minimum(i - start, end - 1 - i)  # distance to the nearer edge
        better = centrality > best[start:end]  # strict: ties stay with the earlier window
        best[start:end][better] = centrality[better]
        owner[start:end][better] = k
    if (owner < 0).any():
        raise ValueError("the windows do not cover every token")
    return owner


def merge_windows(vectors: Sequence[np.ndarray], spans: Sequence[tuple[int, int]], n_tokens: int) -> np.ndarray:
    """Window outputs -> one sentence. Each ``vectors[k]`` has tokens on axis -2: (..., end_k - start_k, W).

    Returns (..., n_tokens, W), every token's row copied from its most central window.
    """
    if len(vectors) != len(spans):
        raise ValueError(f"{len(vectors)} window outputs for {len(spans)} windows")
    if len(spans) == 1:
        return vectors[0]
    owner = window_owners(n_tokens, spans)
    first = vectors[0]
    out = np.empty((*first.shape[:-2], n_tokens, first.shape[-1]), dtype=first.dtype)
    for k, (start, end) in enumerate(spans):
        rows = np.nonzero(owner[start:end] == k)[0]  # positions inside window k
        if rows.size:
            out[..., start + rows, :] = vectors[k][..., rows, :]
    return out
