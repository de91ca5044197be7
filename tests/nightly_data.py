"""The nightly corpora (issue 13) shared by the nightly, search and Flink tests: day 1 from the sample shards,
day 2 from day 1 with edits, deletions, additions and shifted line numbers. Plain files, no Beam."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data" / "sotu"
EDIT = " Moreover, the committee met on a rainy Tuesday."


def day1_corpus(root: Path) -> Path:
    """Day 1: two plain-text shards and a JSON lines shard of the sample (~150 documents)."""
    root.mkdir()
    for name in ("1790-washington.txt", "1801-jefferson.txt", "1862-lincoln.jsonl"):
        shutil.copy(SAMPLE_DIR / name, root / name)
    return root


def day2_corpus(day1: Path, root: Path) -> dict[str, int]:
    """Day 2 from day 1: one sentence appended to every 10th document, 2 documents deleted, 2 added, and 2 lines
    inserted at the top of a plain-text shard (so every later line's document id shifts)."""
    shutil.copytree(day1, root)
    washington = (root / "1790-washington.txt").read_text().splitlines()
    edited = [line + EDIT if i % 10 == 3 else line for i, line in enumerate(washington)]
    del edited[5:7]  # two documents deleted
    edited = ["A brand new opening line about railways.", "Another new line, on canals and harbours.", *edited]
    (root / "1790-washington.txt").write_text("\n".join(edited) + "\n")
    lincoln = [json.loads(line) for line in (root / "1862-lincoln.jsonl").read_text().splitlines()]
    lincoln[1]["text"] += EDIT
    lincoln.append({"id": "added-1", "text": "Steam engines crossed the plains. The telegraph hummed."})
    (root / "1862-lincoln.jsonl").write_text("\n".join(json.dumps(d) for d in lincoln) + "\n")
    return {"edited": sum(1 for i in range(len(washington)) if i % 10 == 3) + 1}
