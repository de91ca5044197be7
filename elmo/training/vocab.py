"""Word vocabularies in bilm-tf's format: one token per line, ``<S>``, ``</S>``, ``<UNK>`` first, then tokens by
descending frequency (the sampled softmax's log-uniform sampler assumes id order = frequency order)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from elmo.chars import BOS_TOKEN, EOS_TOKEN
from elmo.errors import ConfigError

UNK_TOKEN = "<UNK>"
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)


class Vocabulary:
    """Token <-> id; unknown tokens map to ``<UNK>``."""

    def __init__(self, tokens: list[str]):
        missing = [t for t in SPECIAL_TOKENS if t not in tokens]
        if missing:
            raise ConfigError(f"vocabulary lacks the special tokens {missing}")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}
        if len(self.index) != len(tokens):
            duplicates = sorted(t for t, n in Counter(tokens).items() if n > 1)[:5]
            raise ConfigError(f"vocabulary has duplicate tokens: {duplicates}")
        self.unk_id = self.index[UNK_TOKEN]
        self.bos_id = self.index[BOS_TOKEN]
        self.eos_id = self.index[EOS_TOKEN]

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        """The token's id, or ``<UNK>``'s."""
        return self.index.get(token, self.unk_id)

    @classmethod
    def build(cls, sentences: Iterable[list[str]], min_count: int = 1, max_size: int | None = None) -> Vocabulary:
        """Counts tokens; keeps those seen ``min_count`` times, most frequent first (ties by token), capped."""
        counts = Counter(t for s in sentences for t in s)
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        ranked = sorted((t for t, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(SPECIAL_TOKENS))]
        return cls([*SPECIAL_TOKENS, *ranked])

    @classmethod
    def load(cls, path: str) -> Vocabulary:
        """Reads a bilm-tf vocabulary file (``!!!MAXTERMID`` lines are skipped, as bilm-tf does)."""
        import fsspec

        with fsspec.open(path, "rt", encoding="utf-8") as f:
            tokens = [line.strip() for line in f if line.strip() and line.strip() != "!!!MAXTERMID"]
        try:
            return cls(tokens)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def save(self, path: str) -> None:
        """Writes one token per line."""
        import fsspec

        with fsspec.open(path, "wt", encoding="utf-8") as f:
            f.write("\n".join(self.tokens) + "\n")
