"""ReadDocuments and DropDuplicateIds on small shards: ids, formats, compression, and every way a line can fail."""

from __future__ import annotations

import gzip
import json

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.beam_testing import local_pipeline
from transforms.dedup import DropDuplicateIds
from transforms.files import glob_root, relative_source
from transforms.read import ReadDocuments, is_json_lines, iter_lines, parse_line
from transforms.records import Document, DocumentError, RawLine


def test_glob_root_and_relative_source():
    assert glob_root("data/**/*.txt") == "data/"
    assert glob_root("gs://bucket/x/part-*.jsonl") == "gs://bucket/x/"
    assert glob_root("data/one.txt") == "data/"
    assert glob_root("*.txt") == ""
    assert relative_source("gs://bucket/x/a/b.txt", "gs://bucket/x/") == "a/b.txt"


def test_iter_lines_splits_and_skips_overlong_lines_without_holding_them():
    chunks = iter([b"ab\nc", b"d\r\n\n", b"x" * 10, b"y\nlast"])
    assert list(iter_lines(chunks, 5)) == [(b"ab", 2), (b"cd", 2), (b"", 0), (None, 11), (b"last", 4)]


def test_format_from_suffix():
    assert is_json_lines("a/b.jsonl.gz", "auto")
    assert not is_json_lines("a/b.txt.gz", "auto")
    assert is_json_lines("a/b.txt", "jsonl")
    assert is_json_lines("a/b.ndjson.xz", "auto") and is_json_lines("a/b.json.ZSTD", "auto")


@pytest.mark.parametrize(
    "data, json_lines, reason",
    [
        (None, False, "document too large: 2000000 bytes > --max_document_bytes=100"),
        (b"caf\xc3 ok", False, "invalid UTF-8 at byte 3"),
        (b"a\x00b", False, "NUL byte at character 1 (binary data?)"),
        (b'{"id": 1, "text": ', True, "malformed JSON: Expecting value at column 19"),
        (b"[1, 2]", True, "a JSON line must be an object, not list"),
        (b'{"id": "x"}', True, "no string 'text' field"),
        (b'{"id": "x", "text": "  "}', True, "empty document"),
        (b'{"id": true, "text": "t"}', True, "'id' must be a non-empty string or an integer"),
        (b'{"id": "x", "text": "a\\ud800b"}', True, "unpaired surrogate \\ud800 in a JSON string"),
    ],
)
def test_parse_line_reasons(data, json_lines, reason):
    raw = RawLine("s.txt", 4, data, 2_000_000 if data is None else len(data), json_lines)
    with pytest.raises(DocumentError) as err:
        parse_line(raw, 100, "id", "text")
    assert str(err.value) == reason


def test_parse_line_ids():
    assert parse_line(RawLine("a/s.txt", 7, b"hello", 5, False), 100, "id", "text").doc_id == "a/s.txt:7"
    doc = parse_line(RawLine("s.jsonl", 2, b'{"key": 12, "body": "hi"}', 25, True), 100, "key", "body")
    assert (doc.doc_id, doc.text) == ("12", "hi")
    assert parse_line(RawLine("s.jsonl", 3, b'{"text": "no id"}', 17, True), 100, "id", "text").doc_id == "s.jsonl:3"


def test_read_documents_every_format_and_failure(tmp_path):
    (tmp_path / "plain.txt").write_bytes(b"First document.\n\n   \nThird line \xe2\x80\x94 non-ASCII.\r\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "zipped.txt.gz").write_bytes(gzip.compress(b"from a gzip shard\n"))
    (tmp_path / "records.jsonl").write_text(
        "\n".join(
            [
                json.dumps({"id": "r1", "text": "json one"}),
                "{not json",
                json.dumps({"text": "json without id"}),
            ]
        )
        + "\n"
    )
    (tmp_path / "bad.txt").write_bytes(b"ok line\n\xff\xfe bad bytes\nnul \x00 here\n" + b"y" * 300 + b"\n")
    (tmp_path / "empty.txt").write_bytes(b"")
    files = sorted(str(p) for p in tmp_path.rglob("*") if p.is_file())
    root = str(tmp_path) + "/"

    with local_pipeline() as p:
        docs, errors = p | ReadDocuments(files, root, max_document_bytes=200)
        assert_that(
            docs | "Ids" >> beam.Map(lambda d: (d.doc_id, d.text)),
            equal_to(
                [
                    ("plain.txt:1", "First document."),
                    ("plain.txt:4", "Third line — non-ASCII."),
                    ("sub/zipped.txt.gz:1", "from a gzip shard"),
                    ("r1", "json one"),
                    ("records.jsonl:3", "json without id"),
                    ("bad.txt:1", "ok line"),
                ]
            ),
            label="documents",
        )
        assert_that(
            errors | "Reasons" >> beam.Map(lambda e: (e["id"], e["stage"], e["reason"])),
            equal_to(
                [
                    (
                        "records.jsonl:2",
                        "parse",
                        "malformed JSON: Expecting property name enclosed in double quotes at column 2",
                    ),
                    ("bad.txt:2", "parse", "invalid UTF-8 at byte 0"),
                    ("bad.txt:3", "parse", "NUL byte at character 4 (binary data?)"),
                    ("bad.txt:4", "parse", "document too large: 300 bytes > --max_document_bytes=200"),
                ]
            ),
            label="errors",
        )


def test_read_documents_unreadable_shard_is_an_error_not_a_crash(tmp_path):
    (tmp_path / "broken.txt.gz").write_bytes(b"this is not gzip data at all")
    with local_pipeline() as p:
        docs, errors = p | ReadDocuments([str(tmp_path / "broken.txt.gz")], str(tmp_path) + "/")
        assert_that(docs, equal_to([]), label="no documents")
        assert_that(
            errors | beam.Map(lambda e: (e["source"], e["stage"], e["reason"].split(":")[0])),
            equal_to([("broken.txt.gz", "read", "unreadable shard after line 0")]),
            label="one error",
        )


def test_drop_duplicate_ids_keeps_the_first_by_shard_and_line():
    docs = [
        Document("x", "later", "b.jsonl", 1),
        Document("x", "first", "a.jsonl", 9),
        Document("x", "last", "b.jsonl", 5),
        Document("y", "alone", "a.jsonl", 1),
    ]
    with local_pipeline() as p:
        unique, dups = p | beam.Create(docs) | DropDuplicateIds()
        assert_that(unique | beam.Map(lambda d: (d.doc_id, d.text)), equal_to([("x", "first"), ("y", "alone")]))
        assert_that(
            dups | beam.Map(lambda e: (e["source"], e["line"], e["reason"])),
            equal_to(
                [
                    ("b.jsonl", 1, "duplicate id 'x' (first seen at a.jsonl:9)"),
                    ("b.jsonl", 5, "duplicate id 'x' (first seen at a.jsonl:9)"),
                ]
            ),
            label="duplicates",
        )
