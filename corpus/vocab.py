"""The vocabulary file in bilm-tf's format: ``<S>``, ``</S>``, ``<UNK>``, then tokens by descending count."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

SPECIALS = ("<S>", "</S>", "<UNK>")


def build_vocab(counts: Counter[str], min_count: int = 3, max_size: int = 0) -> list[str]:
    """Specials first, then tokens seen at least ``min_count`` times, most frequent first (ties: code-point order).

    ``max_size`` (when > 0) caps the whole list, specials included.
    """
    ranked = sorted(
        (tok for tok, n in counts.items() if n >= min_count and tok not in SPECIALS), key=lambda t: (-counts[t], t)
    )
    vocab = [*SPECIALS, *ranked]
    return vocab[:max_size] if max_size > 0 else vocab


def write_vocab(path: Path, vocab: list[str]) -> None:
    """One token per line, UTF-8, ``\\n`` endings."""
    path.write_text("".join(f"{tok}\n" for tok in vocab), encoding="utf-8", newline="\n")
