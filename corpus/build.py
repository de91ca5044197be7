"""Builds the biLM training corpus: ``python -m corpus.build --out DIR``.

Fetches every selected source (see ``corpus.sources``), cleans it into paragraphs, splits and tokenizes sentences,
drops sentences outside 3..250 tokens, sentences with too few words, and exact duplicates (first source wins),
caps each source's tokens, holds out a fixed hash slice of sentences, and writes:

* ``train-00000-of-000NN.txt`` and ``heldout-00000-of-00001.txt``: one sentence per line, tokens separated by one
  space, lines assigned to shards and ordered by a hash of the line (so shards mix sources and re-runs are
  byte-identical);
* ``vocab.txt``: bilm-tf vocabulary (``<S>``, ``</S>``, ``<UNK>``, then training tokens by descending count);
* ``sources.json``: packages, versions, archive hashes, licenses and counts per source;
* ``tokenizer.json``: the ``elmo.tokenize`` settings the text was tokenized with.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from corpus.fetch import fetch, sha256
from corpus.sources import BY_NAME, DEFAULT, SOURCES, Source
from corpus.text import (
    MAX_TOKENS,
    MIN_TOKENS,
    SPLITTERS,
    Deduplicator,
    SentenceSplitter,
    is_heldout,
    is_prose,
    keep_length,
    sample_by_hash,
    sentence_hash,
    sentences,
    shard_of,
)
from corpus.vocab import build_vocab, write_vocab

TOKENS_PER_SHARD = 1_000_000


@dataclass
class SourceStats:
    """Counts for one source, as written to ``sources.json``."""

    raw_words: int = 0  # whitespace words of the cleaned paragraphs (like ``wc -w``)
    paragraphs: int = 0
    sentences: int = 0  # after splitting, before any filter
    dropped_length: int = 0
    dropped_noise: int = 0  # fewer than 2 word tokens, or under a third of the tokens
    dropped_duplicate: int = 0
    dropped_cap: int = 0
    kept_sentences: int = 0
    kept_tokens: int = 0
    split: dict[str, dict[str, int]] = field(default_factory=dict)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m corpus.build", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, help="output folder (created)")
    parser.add_argument("--cache", type=Path, help="download cache (default: OUT/downloads)")
    parser.add_argument("--sources", nargs="+", default=list(DEFAULT), help="source names, or 'all' (see --list)")
    parser.add_argument("--list", action="store_true", help="list the sources and exit")
    parser.add_argument("--max-words", type=int, default=0, help="cap on total tokens (hash sample); 0: none")
    parser.add_argument(
        "--max-source-words", type=int, default=2_000_000, help="cap on each source's tokens (hash sample); 0: none"
    )
    parser.add_argument("--heldout-fraction", type=float, default=0.01, help="share of sentences held out")
    parser.add_argument("--train-shards", type=int, default=0, help="number of training shards; 0: one per 1M tokens")
    parser.add_argument("--splitter", choices=SPLITTERS, default="blingfire", help="sentence splitter")
    parser.add_argument("--vocab-min-count", type=int, default=3, help="minimum training count of a vocab token")
    parser.add_argument("--vocab-max-size", type=int, default=0, help="maximum vocab size incl. specials; 0: none")
    args = parser.parse_args(argv)
    if not args.list and args.out is None:
        parser.error("--out is required")
    if args.sources == ["all"]:
        args.sources = [s.name for s in SOURCES]
    unknown = sorted(set(args.sources) - set(BY_NAME))
    if unknown:
        parser.error(f"unknown sources {unknown}; known: {sorted(BY_NAME)}")
    return args


def collect(source: Source, cache: Path, splitter: SentenceSplitter, dedup: Deduplicator, cap: int) -> tuple:
    """Fetches and processes one source: ``(kept lines, stats, package records)``."""
    archives = [fetch(package, cache) for package in source.packages]
    packages = [
        {"registry": p.registry, "name": p.name, "version": p.version, "file": a.name, "sha256": sha256(a)}
        for p, a in zip(source.packages, archives, strict=True)
    ]
    stats, kept = SourceStats(), []
    with tempfile.TemporaryDirectory(prefix=f"corpus-{source.name}-") as work:
        paragraphs = list(source.extract(archives, Path(work)))
    stats.paragraphs = len(paragraphs)
    stats.raw_words = sum(len(p.split()) for p in paragraphs)
    for line in sentences(paragraphs, splitter):
        stats.sentences += 1
        tokens = line.split(" ")
        if not keep_length(tokens):
            stats.dropped_length += 1
        elif not is_prose(tokens):
            stats.dropped_noise += 1
        elif not dedup.first_time(line):
            stats.dropped_duplicate += 1
        else:
            kept.append(line)
    if cap and sum(line.count(" ") + 1 for line in kept) > cap:
        before = len(kept)
        kept = sample_by_hash(kept, cap)
        stats.dropped_cap = before - len(kept)
    stats.kept_sentences = len(kept)
    stats.kept_tokens = sum(line.count(" ") + 1 for line in kept)
    return kept, stats, packages


def write_lines(path: Path, lines: list[str]) -> None:
    """Writes lines with ``\\n`` endings, UTF-8."""
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for line in lines:
            handle.write(line)
            handle.write("\n")


def write_splits(out: Path, lines: list[tuple[str, str]], fraction: float, shards: int) -> dict[str, list]:
    """Writes train and held-out shards; returns ``{"train": [...], "heldout": [...]}`` of ``(source, line)``."""
    hashed = sorted((sentence_hash(line), line, name) for name, line in lines)
    heldout = [(name, line) for h, line, name in hashed if is_heldout(h, fraction)]
    train = [(h, name, line) for h, line, name in hashed if not is_heldout(h, fraction)]
    if shards <= 0:
        shards = max(1, math.ceil(sum(line.count(" ") + 1 for _, _, line in train) / TOKENS_PER_SHARD))
    for old in [*out.glob("train-*-of-*.txt"), *out.glob("heldout-*-of-*.txt")]:
        old.unlink()
    buckets: list[list[str]] = [[] for _ in range(shards)]
    for h, _, line in train:
        buckets[shard_of(h, shards)].append(line)
    for index, bucket in enumerate(buckets):
        write_lines(out / f"train-{index:05d}-of-{shards:05d}.txt", bucket)
    write_lines(out / "heldout-00000-of-00001.txt", [line for _, line in heldout])
    return {"train": [(name, line) for _, name, line in train], "heldout": heldout}


def split_counts(split: dict[str, list]) -> dict[str, dict[str, dict[str, int]]]:
    """``{source: {"train"|"heldout": {"sentences": n, "tokens": n}}}``."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for part, rows in split.items():
        for name, line in rows:
            entry = counts.setdefault(name, {}).setdefault(part, {"sentences": 0, "tokens": 0})
            entry["sentences"] += 1
            entry["tokens"] += line.count(" ") + 1
    return counts


def _tool_versions(splitter: str) -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    if splitter == "blingfire":
        versions["blingfire"] = metadata.version("blingfire")
    mod2imp = shutil.which("mod2imp")
    if mod2imp:
        query = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libsword-utils"], capture_output=True, text=True)
        versions["libsword-utils"] = query.stdout.strip() or "unknown"
    return versions


def run(argv: list[str] | None = None) -> dict:
    """Builds the corpus; returns the ``sources.json`` document."""
    args = parse_args(argv)
    if args.list:
        for source in SOURCES:
            print(f"{source.name:20} {'default' if source.default else 'extra  '} {source.description}")
        return {}
    started = time.monotonic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cache = args.cache or out / "downloads"
    splitter, dedup = SentenceSplitter(args.splitter), Deduplicator()
    records, skipped, lines = [], [], []
    for name in args.sources:
        source = BY_NAME[name]
        try:
            kept, stats, packages = collect(source, cache, splitter, dedup, args.max_source_words)
        except (OSError, subprocess.CalledProcessError, ValueError) as error:
            reason = getattr(error, "stderr", b"") or b""
            skipped.append({"source": name, "reason": f"{error} {reason.decode(errors='replace')[-500:]}".strip()})
            print(f"SKIPPED {name}: {skipped[-1]['reason']}", file=sys.stderr)
            continue
        lines.extend((name, line) for line in kept)
        records.append((source, stats, packages))
        print(f"{name:20} {stats.kept_sentences:>9,} sentences {stats.kept_tokens:>11,} tokens", file=sys.stderr)
    if args.max_words:
        total_before = len(lines)
        lines = _cap_total(lines, args.max_words)
        print(f"--max-words: kept {len(lines):,} of {total_before:,} sentences", file=sys.stderr)
    split = write_splits(out, lines, args.heldout_fraction, args.train_shards)
    counts = split_counts(split)
    counter = Counter(tok for _, line in split["train"] for tok in line.split(" "))
    vocab = build_vocab(counter, args.vocab_min_count, args.vocab_max_size)
    write_vocab(out / "vocab.txt", vocab)
    (out / "tokenizer.json").write_text(splitter.tokenizer.config.to_json(), encoding="utf-8")
    document = _document(args, records, skipped, counts, len(vocab), splitter)
    (out / "sources.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _report(document, time.monotonic() - started)
    return document


def _cap_total(lines: list[tuple[str, str]], max_tokens: int) -> list[tuple[str, str]]:
    """A hash sample of ``(source, line)`` pairs holding at most ``max_tokens`` tokens, original order kept."""
    order = sorted(range(len(lines)), key=lambda i: (sentence_hash(lines[i][1]), lines[i][1]))
    chosen, budget = set(), max_tokens
    for i in order:
        size = lines[i][1].count(" ") + 1
        if size <= budget:
            chosen.add(i)
            budget -= size
    return [pair for i, pair in enumerate(lines) if i in chosen]


def _document(args, records, skipped, counts, vocab_size, splitter) -> dict:
    totals = {part: {"sentences": 0, "tokens": 0} for part in ("train", "heldout")}
    sources = []
    for source, stats, packages in records:
        stats.split = counts.get(source.name, {})
        for part, entry in stats.split.items():
            totals[part]["sentences"] += entry["sentences"]
            totals[part]["tokens"] += entry["tokens"]
        sources.append(
            {
                "name": source.name,
                "description": source.description,
                "license": source.license,
                "packages": packages,
                "counts": stats.__dict__,
            }
        )
    return {
        "builder": "corpus.build",
        "settings": {
            "sources": args.sources,
            "max_words": args.max_words,
            "max_source_words": args.max_source_words,
            "heldout_fraction": args.heldout_fraction,
            "splitter": args.splitter,
            "min_tokens": MIN_TOKENS,
            "max_tokens": MAX_TOKENS,
            "vocab_min_count": args.vocab_min_count,
            "vocab_max_size": args.vocab_max_size,
        },
        "tools": _tool_versions(splitter.name),
        "tokenizer": json.loads(splitter.tokenizer.config.to_json()),
        "sources": sources,
        "skipped": skipped,
        "totals": {**totals, "vocab_size": vocab_size},
    }


def _report(document: dict, seconds: float) -> None:
    totals = document["totals"]
    print(
        f"train {totals['train']['sentences']:,} sentences / {totals['train']['tokens']:,} tokens; "
        f"held-out {totals['heldout']['sentences']:,} / {totals['heldout']['tokens']:,}; "
        f"vocab {totals['vocab_size']:,}; {len(document['skipped'])} skipped; {seconds:.0f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run()
