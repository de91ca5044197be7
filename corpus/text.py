"""Sentence splitting and tokenization of cleaned paragraphs, plus the sentence-level filters and hashes.

Tokens come from the inference pipeline's tokenizer (``elmo.tokenize.Tokenizer``), so the corpus is cut into
tokens exactly as text is at inference. Sentence boundaries come either from the same tokenizer (``elmo``) or from
``blingfire`` (``blingfire``: a trained splitter, better on quotes and abbreviations); in the second case each
blingfire sentence is then tokenized by ``Tokenizer.tokens``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from elmo.tokenize import Tokenizer, TokenizerConfig

SPLITTERS = ("blingfire", "elmo")
MIN_TOKENS = 3
MAX_TOKENS = 250


class SentenceSplitter:
    """Paragraph -> sentences as token lists, by one of ``SPLITTERS``."""

    def __init__(self, splitter: str = "blingfire", config: TokenizerConfig | None = None):
        if splitter not in SPLITTERS:
            raise ValueError(f"unknown splitter {splitter!r}; choose one of {SPLITTERS}")
        self.name = splitter
        self.tokenizer = Tokenizer(config or TokenizerConfig())
        self._blingfire = None
        if splitter == "blingfire":
            import blingfire  # optional dependency, needed by this splitter only

            self._blingfire = blingfire

    def split(self, paragraph: str) -> list[list[str]]:
        """The sentences of one paragraph, each a list of token strings."""
        if self._blingfire is None:
            return [s.texts() for s in self.tokenizer.sentences(paragraph)]
        out = []
        for sentence in self._blingfire.text_to_sentences(paragraph).split("\n"):
            tokens = [t.text for t in self.tokenizer.tokens(sentence)]
            if tokens:
                out.append(tokens)
        return out


def keep_length(tokens: list[str], min_tokens: int = MIN_TOKENS, max_tokens: int = MAX_TOKENS) -> bool:
    """Whether a sentence has an acceptable number of tokens."""
    return min_tokens <= len(tokens) <= max_tokens


def is_prose(tokens: list[str], min_words: int = 2, min_share: float = 1 / 3) -> bool:
    """Whether a sentence has words: at least ``min_words`` tokens holding a letter, and that share of all tokens.

    Drops leftovers such as ``23 ) .``, ``* * *`` or ``: - (`` that survive the line-level noise filter.
    """
    words = sum(any(c.isalpha() for c in tok) for tok in tokens)
    return words >= min_words and words >= min_share * len(tokens)


def sentence_hash(line: str) -> int:
    """A stable 64-bit hash of a sentence line (BLAKE2b), the same on every machine and Python run."""
    return int.from_bytes(hashlib.blake2b(line.encode("utf-8"), digest_size=8).digest(), "big")


def is_heldout(line_hash: int, fraction: float) -> bool:
    """Whether a sentence belongs to the held-out split: a fixed slice of hash space, so re-runs agree."""
    return line_hash % 100_000 < round(fraction * 100_000)


def shard_of(line_hash: int, num_shards: int) -> int:
    """The training shard of a sentence (uses other hash bits than ``is_heldout``)."""
    return (line_hash >> 32) % num_shards


class Deduplicator:
    """Keeps the first occurrence of each exact sentence line, across all sources."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def first_time(self, line: str) -> bool:
        """True the first time ``line`` is offered, False afterwards."""
        key = hashlib.blake2b(line.encode("utf-8"), digest_size=12).digest()
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


def sample_by_hash(lines: Iterable[str], max_tokens: int) -> list[str]:
    """A deterministic pseudo-random subset of ``lines`` holding at most ``max_tokens`` tokens.

    Lines are taken in order of their hash until the budget is spent, then returned in their original order.
    """
    indexed = list(enumerate(lines))
    chosen, budget = [], max_tokens
    for index, line in sorted(indexed, key=lambda item: (sentence_hash(item[1]), item[1])):
        size = line.count(" ") + 1
        if size > budget:
            continue
        chosen.append(index)
        budget -= size
    return [indexed[i][1] for i in sorted(chosen)]


def sentences(paragraphs: Iterable[str], splitter: SentenceSplitter) -> Iterator[str]:
    """Whitespace-joined token lines of all sentences of ``paragraphs`` (no filtering)."""
    for paragraph in paragraphs:
        for tokens in splitter.split(paragraph):
            yield " ".join(tokens)
