"""Hostile input end to end: every bad line is embedded (in windows when long) or dead-lettered with a reason; the
job finishes and the counts reconcile."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from elmo.windows import plan_windows
from tests.beam_testing import (
    restore_torch_threads,  # noqa: F401  (autouse fixture)
    run_job_summary,
)

LONG_SENTENCE_TOKENS = 100_000


def write_shards(root: Path) -> None:
    (root / "good.txt").write_text(
        "Plain English sentence one. And two.\n"
        "\n"
        "   \n"
        "Ελληνικά κείμενα εδώ. Русский текст!\n"
        "中文句子。日本語の文！\n"
        "Emoji 😀👍🏽 and 👨‍👩‍👧 family 🎉\n"
        "العربية نص هنا\n"
        "हिन्दी पाठ\n",
        encoding="utf-8",
    )
    (root / "bad.txt").write_bytes(b"valid line\nbad \xff\xfe utf8\nnul\x00byte\n\x01\x02\x03\n")
    with open(root / "huge.txt", "wb") as f:
        f.write(b"a" * 10_000_000 + b"\n")  # a 10 MB line: over --max_document_bytes
        f.write(b"word " * LONG_SENTENCE_TOKENS + b"\n")  # one 100,000-token sentence: embedded in windows
    (root / "empty.txt").write_bytes(b"")
    (root / "empty.jsonl.gz").write_bytes(gzip.compress(b""))
    (root / "data.jsonl").write_text(
        "\n".join(
            [
                json.dumps({"id": "j1", "text": "The first j1."}),
                "{oops",
                json.dumps({"id": "j1", "text": "A duplicate id."}),
                json.dumps({"id": "j2"}),
                '{"id": "j3", "text": "lone \\ud800 surrogate"}',
                json.dumps({"id": "j4", "text": "ok emoji 🧪 and more"}, ensure_ascii=False),
                "[1, 2]",
                "",
            ]
        ),
        encoding="utf-8",
    )


EXPECTED_ERRORS = {
    "bad.txt:2": "invalid UTF-8 at byte 4",
    "bad.txt:3": "NUL byte at character 3 (binary data?)",
    "bad.txt:4": "no tokens (only whitespace or control characters)",
    "huge.txt:1": "document too large: 10000000 bytes > --max_document_bytes=1000000",
    "data.jsonl:2": "malformed JSON: Expecting property name enclosed in double quotes at column 2",
    "j1": "duplicate id 'j1' (first seen at data.jsonl:1)",
    "data.jsonl:4": "no string 'text' field",
    "data.jsonl:5": "unpaired surrogate \\ud800 in a JSON string",
    "data.jsonl:7": "a JSON line must be an object, not list",
}
EXPECTED_EMBEDDED = {
    "good.txt:1",
    "good.txt:4",
    "good.txt:5",
    "good.txt:6",
    "good.txt:7",
    "good.txt:8",
    "bad.txt:1",
    "huge.txt:2",
    "j1",
    "j4",
}


@pytest.fixture(scope="module")
def bad_summary(tmp_path_factory) -> dict:
    shards = tmp_path_factory.mktemp("shards")
    write_shards(shards)
    return run_job_summary(tmp_path_factory.mktemp("out"), "--max_batch_tokens=16384", input_glob=f"{shards}/*")


@pytest.fixture(scope="module")
def bad_run(bad_summary) -> Path:
    return Path(bad_summary["run_dir"])


def test_the_job_finishes_and_the_counts_reconcile(bad_run, bad_summary):
    manifest = json.loads((bad_run / "manifest.json").read_text())
    assert (bad_run / "_SUCCESS").exists()
    counts = manifest["counts"]
    assert counts["documents_read"] == len(EXPECTED_EMBEDDED) + len(EXPECTED_ERRORS)
    assert counts["documents_embedded"] == len(EXPECTED_EMBEDDED)
    assert counts["documents_failed"] == len(EXPECTED_ERRORS)
    assert manifest["reconciled"]
    counters = bad_summary["counters"]  # the Beam counters agree with the manifest
    assert counters["documents_read"] == counts["documents_read"]
    assert counters["documents_failed"] == counts["documents_failed"]
    assert counters["documents_embedded"] == counts["documents_embedded"]
    assert counters["blank_lines_skipped"] == 2  # good.txt lines 2 and 3
    assert counters["sentences_windowed"] == 1


def test_every_failure_is_in_errors_with_its_reason(bad_run):
    lines = (bad_run / "errors" / "part-00000-of-00001.jsonl").read_text(encoding="utf-8").splitlines()
    errors = [json.loads(line) for line in lines]
    assert {e["id"]: e["reason"] for e in errors} == EXPECTED_ERRORS
    duplicate = next(e for e in errors if e["id"] == "j1")
    assert (duplicate["source"], duplicate["line"], duplicate["excerpt"]) == ("data.jsonl", 3, "A duplicate id.")
    assert all(len(e["excerpt"]) <= 200 for e in errors)


def test_non_latin_emoji_and_the_long_sentence_are_embedded(bad_run):
    table = pq.read_table(bad_run / "sentences")
    rows = {r["id"]: r for r in table.select(["id", "doc_id", "tokens", "n_windows", "text"]).to_pylist()}
    assert {r["doc_id"] for r in rows.values()} == EXPECTED_EMBEDDED
    assert rows["good.txt:5#0"]["tokens"] == ["中", "文", "句", "子", "。"]
    assert rows["good.txt:6#0"]["tokens"] == ["Emoji", "😀👍🏽", "and", "👨‍👩‍👧", "family", "🎉"]
    assert rows["j1#0"]["text"] == "The first j1."
    long = rows["huge.txt:2#0"]
    assert len(long["tokens"]) == LONG_SENTENCE_TOKENS
    assert long["n_windows"] == len(plan_windows(LONG_SENTENCE_TOKENS, 256, 32))
