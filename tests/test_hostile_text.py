"""Hostile text: shards that break off (no silent partial reads) and text that is not plain ASCII (tokens are whole
characters), by properties over random bytes, text and JSON lines, and by one example per face of the problem."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import struct
import unicodedata
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import regex
import zstandard
from apache_beam.pvalue import TaggedOutput
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elmo.model_dir import default_model_dir
from elmo.tokenize import Tokenizer, TokenizerConfig
from tests.beam_testing import (
    REPO,
    restore_torch_threads,  # noqa: F401  (autouse fixture)
    run_job_summary,
)
from tests.model_files import TINY_MODEL
from transforms.read import ReadLinesFn, iter_lines, parse_line
from transforms.records import DocumentError, RawLine

V1 = Tokenizer(TokenizerConfig(version=1))
V2 = Tokenizer(TokenizerConfig(version=2))
MAX_BYTES = 1 << 16  # above any line the properties write
PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def read_shard(path: Path) -> tuple[list[RawLine], list[dict]]:
    """Runs the read DoFn on one shard, outside Beam: (raw lines, unreadable-shard error records)."""
    lines, errors = [], []
    for out in ReadLinesFn(str(path.parent) + "/", "auto", MAX_BYTES).process(str(path)):
        if isinstance(out, TaggedOutput):
            errors.append(out.value)
        else:
            lines.append(out)
    return lines, errors


def parse_all(lines: list[RawLine]) -> tuple[list, list[str]]:
    """Parses raw lines as the pipeline does: (documents, parse error reasons). Only DocumentError may be raised."""
    documents, reasons = [], []
    for raw in lines:
        try:
            documents.append(parse_line(raw, MAX_BYTES, "id", "text"))
        except DocumentError as exc:
            reasons.append(str(exc))
    return documents, reasons


def is_blank_line(line: bytes) -> bool:
    """The oracle for blank lines, on decoded text: only whitespace (with a line's trailing CR) and format
    characters."""
    try:
        return regex.fullmatch(r"[\s\p{Cf}]*", line.decode("utf-8")) is not None
    except UnicodeDecodeError:
        return False


def line_count(data: bytes) -> int:
    """Lines in a shard: pieces between line breaks, the last counted only when it is not empty."""
    return data.count(b"\n") + (not data.endswith(b"\n") and data != b"")


def assert_whole_tokens(tokenizer: Tokenizer, text: str) -> None:
    """The token invariants: offsets slice back, no empty or whitespace-holding token, in order and disjoint, and
    (version 2) no token starts with a combining mark or cuts a grapheme cluster (but for the marks that start one:
    they belong to the cluster before)."""
    clusters = {len(text)}
    for m in regex.finditer(r"\X", text):
        clusters |= {m.start(), m.start() + len(regex.match(r"\p{M}*", m.group()).group())}
    end = 0
    for sentence in tokenizer.sentences(text):
        for token in sentence.tokens:
            assert text[token.start : token.end] == token.text
            assert token.text and not any(c.isspace() for c in token.text)
            assert token.start >= end
            end = token.end
            if tokenizer.config.version == 2:
                assert not unicodedata.category(token.text[0]).startswith("M")
                assert token.start in clusters and token.end in clusters


# --- properties ------------------------------------------------------------------------------------------------

HOSTILE_CHARS = st.one_of(
    st.characters(codec="utf-8"),  # any code point but surrogates
    st.sampled_from(
        list(" \t\r\n\u00a0\u2007\u202f\u3000\u2028\u2029\x85")  # whitespace of every kind
        + list("\u200b\u200c\u200d\u2060\ufeff\u00ad\u200e\u202a\u202e\u2066\u2069\u0600")  # format characters
        + list("\u0300\u0301\u0327\u093f\u094d\u0e49\u0e33\u102b\ufe0f\U0001f3fd")  # marks and modifiers
        + list("aé.,'’-!?…—")
        + ["\r\n", "हिन्दी", "น้ำ", "東京", "👨\u200d👩\u200d👧", "🇺🇸", "didn't", "U.S."]
    ),
)
HOSTILE_TEXT = st.lists(HOSTILE_CHARS, max_size=60).map("".join)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | HOSTILE_TEXT, lambda inner: st.lists(inner, max_size=3), max_leaves=4
)
JSON_LINES = st.one_of(
    st.fixed_dictionaries({"text": HOSTILE_TEXT}, optional={"id": JSON_VALUES}).map(json.dumps),
    st.dictionaries(st.sampled_from(["id", "text", "x"]), JSON_VALUES, max_size=3).map(json.dumps),
    HOSTILE_TEXT.map(lambda text: text.replace("\n", " ")),  # mostly malformed JSON
)


@PROPERTY
@given(
    body=st.one_of(
        st.binary(max_size=400),
        st.lists(HOSTILE_TEXT, max_size=8).map(lambda lines: "\n".join(lines).encode("utf-8")),
    ),
    compress=st.booleans(),
)
def test_every_line_of_random_bytes_is_accounted_for(tmp_path, body, compress):
    path = tmp_path / ("shard.txt.gz" if compress else "shard.txt")
    path.write_bytes(gzip.compress(body) if compress else body)
    lines, errors = read_shard(path)
    documents, reasons = parse_all(lines)
    assert errors == []
    blank = sum(is_blank_line(line) for line in body.split(b"\n")[: line_count(body)])
    assert line_count(body) == len(documents) + len(reasons) + blank
    for doc in documents:
        assert_whole_tokens(V2, doc.text)


@PROPERTY
@given(body=st.lists(HOSTILE_TEXT, max_size=8).map(lambda lines: "\n".join(lines).encode("utf-8")), cut=st.integers(0))
def test_a_cut_gzip_yields_only_whole_lines_and_one_error(tmp_path, body, cut):
    packed = gzip.compress(body)
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(packed[: cut % len(packed)])  # an empty file is no gzip member: no lines, no error
    lines, errors = read_shard(path)
    assert len(errors) == (cut % len(packed) > 0)
    whole = body.split(b"\n")[: body.count(b"\n")]  # the lines with their line break
    for raw in lines:
        assert raw.line <= len(whole) and raw.data == whole[raw.line - 1].removesuffix(b"\r")
    if errors:
        assert errors[0]["line"] > max([raw.line for raw in lines], default=0)
        assert errors[0]["reason"].startswith(f"unreadable shard after line {errors[0]['line'] - 1}: ")


@PROPERTY
@given(records=st.lists(JSON_LINES, max_size=8), crlf=st.booleans())
def test_every_json_line_is_a_document_a_parse_error_or_blank(tmp_path, records, crlf):
    path = tmp_path / "shard.jsonl"
    data = ("\r\n" if crlf else "\n").join(records).encode("utf-8")
    path.write_bytes(data)
    lines, errors = read_shard(path)
    documents, reasons = parse_all(lines)
    counted = records[: line_count(data)]  # a last empty record is no line
    assert errors == []
    assert len(counted) == len(documents) + len(reasons) + sum(is_blank_line(r.encode("utf-8")) for r in counted)
    for doc in documents:
        assert_whole_tokens(V2, doc.text)


@PROPERTY
@given(text=HOSTILE_TEXT)
def test_tokens_are_whole_characters_that_slice_back(text):
    for tokenizer in (V1, V2):
        tokens = tokenizer.tokens(text)
        assert [t.text for s in tokenizer.sentences(text) for t in s.tokens] == [t.text for t in tokens]
        assert_whole_tokens(tokenizer, text)


@PROPERTY
@given(chunks=st.lists(st.binary(max_size=30), max_size=6), cut=st.integers(min_value=1, max_value=40))
def test_a_line_is_never_split_across_chunks(chunks, cut):
    data = b"".join(chunks)
    pieces = [data[i : i + cut] for i in range(0, len(data), cut)]
    assert [line for line, _ in iter_lines(iter(pieces), 1 << 20)] == [
        line.removesuffix(b"\r") for line in data.split(b"\n")[: line_count(data)]
    ]


# --- class 3: no silent partial reads ----------------------------------------------------------------------------

TEXT = b"".join(b"line number %d of a shard.\n" % i for i in range(1, 2001))  # 2000 lines


def test_a_truncated_gzip_keeps_whole_lines_and_reports_the_break(tmp_path):
    packed = gzip.compress(TEXT)
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(packed[: len(packed) // 2])
    lines, errors = read_shard(path)
    assert len(errors) == 1 and 0 < len(lines) < 2000
    assert errors[0]["stage"] == "read"
    assert errors[0]["reason"] == f"unreadable shard after line {len(lines)}: truncated gzip stream"
    assert errors[0]["line"] == len(lines) + 1
    assert [raw.data for raw in lines] == TEXT.split(b"\n")[: len(lines)]  # whole lines only: the partial one held


def test_a_gzip_with_a_bad_crc_is_an_error_after_its_last_line(tmp_path):
    packed = bytearray(gzip.compress(TEXT))
    packed[-8:-4] = struct.pack("<I", zlib.crc32(TEXT) ^ 1)
    path = tmp_path / "crc.txt.gz"
    path.write_bytes(bytes(packed))
    lines, errors = read_shard(path)
    # zlib raises for the whole chunk that ends in the bad trailer: a small shard may yield no line before the error
    assert [raw.data for raw in lines] == TEXT.split(b"\n")[: len(lines)] and len(errors) == 1
    assert errors[0]["reason"].startswith(f"unreadable shard after line {len(lines)}: corrupt gzip stream:")
    assert "incorrect data check" in errors[0]["reason"]


def test_concatenated_gzip_members_are_read_completely(tmp_path):
    path = tmp_path / "members.txt.gz"
    path.write_bytes(gzip.compress(b"one\ntwo\n") + gzip.compress(b"") + gzip.compress(b"three\nfour"))
    lines, errors = read_shard(path)
    assert errors == [] and [raw.data for raw in lines] == [b"one", b"two", b"three", b"four"]


@pytest.mark.parametrize(
    "suffix, compress",
    [
        (".bz2", bz2.compress),
        (".xz", lzma.compress),
        (".deflate", zlib.compress),
        (".zst", zstandard.ZstdCompressor(write_checksum=True).compress),
    ],
)
def test_every_compression_is_read_whole_and_refused_when_cut(tmp_path, suffix, compress):
    whole = tmp_path / ("whole.txt" + suffix)
    whole.write_bytes(compress(TEXT) + compress(b"last line without a break"))
    lines, errors = read_shard(whole)
    assert errors == [] and len(lines) == 2001 and lines[-1].data == b"last line without a break"
    cut = tmp_path / ("cut.txt" + suffix)
    cut.write_bytes(compress(TEXT)[:-5])
    lines, errors = read_shard(cut)
    assert len(errors) == 1 and len(lines) <= 2000
    assert errors[0]["reason"].startswith(f"unreadable shard after line {len(lines)}: ")


def test_a_complete_plain_file_reads_its_last_line_without_a_break(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_bytes(b"first\nlast, no line break")
    lines, errors = read_shard(path)
    assert errors == [] and [raw.data for raw in lines] == [b"first", b"last, no line break"]


def test_a_truncated_shard_end_to_end_counts_reconcile(tmp_path):
    shards = tmp_path / "in"
    shards.mkdir()
    packed = gzip.compress(b"Whole line one.\nWhole line two.\nA partial line that must never be embe")
    (shards / "cut.txt.gz").write_bytes(packed[:-12])
    (shards / "blank.txt").write_text("Plain text.\n\u00a0\u200b\u3000\n\u2060\u200e\n", encoding="utf-8")
    summary = run_job_summary(tmp_path / "out", input_glob=f"{shards}/*")
    run = Path(summary["run_dir"])
    counts = json.loads((run / "manifest.json").read_text())["counts"]
    errors = [json.loads(line) for f in (run / "errors").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert [(e["stage"], e["reason"]) for e in errors] == [
        ("read", "unreadable shard after line 2: truncated gzip stream")
    ]
    assert (counts["documents_read"], counts["documents_embedded"], counts["documents_failed"]) == (4, 3, 1)
    assert summary["counters"]["blank_lines_skipped"] == 2
    embedded = set(pq.read_table(run / "sentences", columns=["doc_id"]).column("doc_id").to_pylist())
    assert embedded == {"cut.txt.gz:1", "cut.txt.gz:2", "blank.txt:1"}  # the partial third line is not


# --- class 7: tokens are whole characters ------------------------------------------------------------------------


def texts(tokenizer: Tokenizer, text: str) -> list[tuple[str, int, int]]:
    return [(t.text, t.start, t.end) for t in tokenizer.tokens(text)]


def test_a_decomposed_accent_stays_on_its_letter():
    assert texts(V2, "tre\u0300s bien") == [("tre\u0300s", 0, 5), ("bien", 6, 10)]
    assert texts(V1, "tre\u0300s bien") == [("tre", 0, 3), ("\u0300", 3, 4), ("s", 4, 5), ("bien", 6, 10)]


def test_devanagari_and_persian_words_are_one_token_with_their_joiners():
    assert [t.text for t in V2.tokens("हिन्दी पाठ")] == ["हिन्दी", "पाठ"]
    assert [t.text for t in V2.tokens("क्\u200dष می\u200cخواهم")] == ["क्\u200dष", "می\u200cخواهم"]


def test_thai_keeps_vowel_signs_and_tone_marks_on_their_consonant():
    assert [t.text for t in V2.tokens("น้ำ ภาษาไทย")] == ["น้ำ", "ภาษาไทย"]  # a run of Thai letters: one token
    assert [t.text for t in V1.tokens("น้ำ")] == ["น", "\u0e49", "\u0e33"]


def test_format_characters_are_never_tokens():
    text = "a\u200bb \u2060 \u200e c\u202ad\u202c \u2066e\u2069 \ufeff"
    assert [t.text for t in V2.tokens(text)] == ["a", "b", "c", "d", "e"]
    assert [t.text for t in V2.tokens("co\u00adoperate x\u2060y")] == ["co\u00adoperate", "x\u2060y"]
    assert [t.text for t in V2.tokens("1\ufe0f\u20e3 👨\u200d👩\u200d👧 🇺🇸")] == [
        "1\ufe0f\u20e3",
        "👨\u200d👩\u200d👧",
        "🇺🇸",
    ]
    assert V2.tokens("\u0301 \u200d \u00ad") == []


def test_a_line_of_only_invisible_characters_is_blank_not_a_failed_document(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\u00a0\u200b\n\u3000\u2007\u202f\ufeff\nword\n\u202a\u202c\u2066\u2069\u200e\n", encoding="utf-8")
    lines, errors = read_shard(path)
    assert errors == [] and [(raw.line, raw.data) for raw in lines] == [(3, b"word")]


def test_unknown_versions_are_refused():
    for version in (0, 3, True, "2"):
        with pytest.raises(ValueError, match="this code implements versions"):
            TokenizerConfig(version=version)
    assert TokenizerConfig().version == 2


def english_texts() -> list[str]:
    """Real English: the sample State of the Union addresses (text, gzip and JSON lines), line by line and whole."""
    out = []
    for path in sorted((REPO / "sample_data" / "sotu").iterdir()):
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        lines = raw.decode("utf-8").split("\n")
        if path.suffix == ".jsonl":
            lines = [json.loads(line)["text"] for line in lines if line.strip()]
        out += [*lines, "\n".join(lines)]
    return out


def test_versions_1_and_2_cut_english_identically():
    english = english_texts()
    assert sum(len(text) for text in english) > 100_000
    for text in english:
        one = [(s.start, s.end, s.tokens) for s in V1.sentences(text)]
        assert [(s.start, s.end, s.tokens) for s in V2.sentences(text)] == one


def test_the_shipped_models_use_version_2():
    for model in (default_model_dir(), TINY_MODEL):
        config = TokenizerConfig.from_json((model / "tokenizer.json").read_text())
        assert config.version == 2
