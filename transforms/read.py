"""Reading input shards into documents: plain text (one document per line) or JSON lines, compressed or not.

A shard is read to its verified end or not at all: compressed shards are decompressed here (not by Beam's reader,
which stops quietly at a truncated stream), every stream must reach its end marker with its checksums right, and a
shard that breaks off becomes an error record; its last, partial line is never a document.
"""

from __future__ import annotations

import bz2
import functools
import json
import lzma
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import apache_beam as beam
import regex
import zstandard
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.files import relative_source
from transforms.metrics import counter
from transforms.records import Document, DocumentError, RawLine, error_record, exception_reason

READ_CHUNK_BYTES = 1 << 20  # compressed bytes read at a time
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
INPUT_FORMATS = ("auto", "text", "jsonl")
DEFAULT_MAX_DOCUMENT_BYTES = 1_000_000  # longer documents become error records (the --max_document_bytes default)
# Every compression Beam's CompressionTypes.AUTO picks by suffix (.gz, .bz2, .deflate, .zst/.zstd, .xz/.lzma), with a
# decompressor that has ``eof`` and ``unused_data``; each checks its stream's checksums (gzip: CRC-32 and length,
# zlib: Adler-32, bzip2: block and stream CRCs, xz: its check, zstd: the frame checksum when the writer stored one).
DECOMPRESSORS: dict[str, Callable[[], object]] = {
    CompressionTypes.GZIP: lambda: zlib.decompressobj(wbits=31),  # 31: gzip header and trailer
    CompressionTypes.DEFLATE: zlib.decompressobj,  # a zlib stream, as Beam writes .deflate
    CompressionTypes.BZIP2: bz2.BZ2Decompressor,
    CompressionTypes.LZMA: lzma.LZMADecompressor,  # .xz and legacy .lzma
    CompressionTypes.ZSTD: lambda: zstandard.ZstdDecompressor(max_window_size=1 << 31).decompressobj(),  # as Beam
}


class ShardError(Exception):
    """A shard that cannot be read to its end: truncated or corrupt compressed data."""


def compression_of(path: str) -> str:
    """The shard's compression, from its suffix exactly as Beam's ``CompressionTypes.AUTO`` decides."""
    return CompressionTypes.detect_compression_type(path)


def is_json_lines(path: str, input_format: str) -> bool:
    """Whether a shard is read as JSON lines: by ``input_format``, or for ``auto`` by its suffix (a compression
    suffix ignored)."""
    if input_format != "auto":
        return input_format == "jsonl"
    name = path
    if compression_of(path) != CompressionTypes.UNCOMPRESSED:
        name = path.rsplit(".", 1)[0]
    return name.endswith(JSON_SUFFIXES)


def shard_chunks(path: str) -> Iterator[bytes]:
    """The decompressed bytes of a shard, in chunks; raises ShardError (after the last good chunk) when a compressed
    stream is truncated or corrupt."""
    compression = compression_of(path)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        raw = iter(lambda: f.read(READ_CHUNK_BYTES), b"")
        if compression == CompressionTypes.UNCOMPRESSED:
            yield from raw
        else:
            yield from decompress(raw, DECOMPRESSORS[compression], compression)


def decompress(raw: Iterable[bytes], new_decompressor: Callable[[], object], name: str) -> Iterator[bytes]:
    """Decompresses a stream of one or more concatenated members (valid for every format here); an empty input is
    no member. Raises ShardError when a member is corrupt (bad data or checksum) or the input ends inside one."""
    decompressor, started = new_decompressor(), False
    for chunk in raw:
        while chunk:
            if decompressor.eof:  # a member ended and more bytes follow: the next member
                decompressor = new_decompressor()
            try:
                out = decompressor.decompress(chunk)
            except Exception as exc:  # zlib.error, OSError, lzma.LZMAError, zstandard.ZstdError
                raise ShardError(f"corrupt {name} stream: {exc}") from exc
            started = True
            chunk = decompressor.unused_data if decompressor.eof else b""
            if out:
                yield out
    if started and not decompressor.eof:
        raise ShardError(f"truncated {name} stream")


@functools.cache
def _blank_line_re() -> re.Pattern[bytes]:
    """Matches the UTF-8 of a line made only of Unicode whitespace (``regex``'s ``\\s``: NBSP, U+2007, U+202F,
    U+3000, ...) and format characters (``\\p{Cf}``: ZWSP, U+2060, U+FEFF, bidi controls, ...). Built once (~0.2 s)."""
    every = "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x110000)))
    by_prefix: dict[bytes, list[int]] = {}  # UTF-8 of a blank character: all bytes but the last -> last bytes
    for char in regex.findall(r"[\s\p{Cf}]", every):
        encoded = char.encode("utf-8")
        by_prefix.setdefault(encoded[:-1], []).append(encoded[-1])
    alternatives = [
        re.escape(prefix) + b"[" + b"".join(re.escape(bytes([b])) for b in last) + b"]"
        for prefix, last in by_prefix.items()
    ]
    return re.compile(b"(?:" + b"|".join(alternatives) + b")*+")


def is_blank(line: bytes) -> bool:
    """Whether a raw line holds only whitespace and invisible format characters (no decoding: invalid UTF-8 is not
    blank, and goes on to fail as a document)."""
    return _blank_line_re().fullmatch(line) is not None


def iter_lines(chunks: Iterator[bytes], max_bytes: int) -> Iterator[tuple[bytes | None, int]]:
    """Splits a byte stream into lines: ``(line, n_bytes)``, ``line`` None when longer than ``max_bytes``.

    Lines end at ``\\n`` (a trailing ``\\r`` is dropped); an over-long line is skipped without being held in memory.
    """
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        pos = 0
        while pos < len(chunk):
            nl = chunk.find(b"\n", pos)
            piece = chunk[pos:] if nl < 0 else chunk[pos:nl]
            size += len(piece)
            if size <= max_bytes:
                parts.append(piece)
            if nl < 0:
                break
            yield _finish(parts, size, max_bytes)
            parts, size = [], 0
            pos = nl + 1
    if size or parts:
        yield _finish(parts, size, max_bytes)


def _finish(parts: list[bytes], size: int, max_bytes: int) -> tuple[bytes | None, int]:
    if size > max_bytes:
        return None, size
    line = b"".join(parts)
    if line.endswith(b"\r"):
        line = line[:-1]
    return line, len(line)


class ReadLinesFn(beam.DoFn):
    """shard path -> RawLine per non-blank line; an unreadable shard -> tagged ``unreadable`` error record.

    A line is emitted once its line break is read, and the last line (without one) only once the shard's end is
    verified, so a shard that breaks off yields its whole lines and an error, never its partial last line.
    """

    def __init__(self, root: str, input_format: str, max_document_bytes: int):
        self._root = root
        self._format = input_format
        self._max_bytes = max_document_bytes
        self._lines = counter("lines_read")
        self._blank = counter("blank_lines_skipped")
        self._bad_files = counter("files_unreadable")
        self._documents = counter("documents_read")  # = manifest documents_read: non-blank lines + unreadable shards

    def process(self, path: str):
        source = relative_source(path, self._root)
        json_lines = is_json_lines(path, self._format)
        line_no = 0
        try:
            for data, n_bytes in iter_lines(shard_chunks(path), self._max_bytes):
                line_no += 1
                self._lines.inc()
                if data is not None and is_blank(data):
                    self._blank.inc()
                    continue
                self._documents.inc()
                yield RawLine(source, line_no, data, n_bytes, json_lines)
        except Exception as exc:  # a truncated, corrupt or vanished shard: the rest of it is one failed "document"
            self._bad_files.inc()
            self._documents.inc()
            detail = str(exc) if isinstance(exc, ShardError) else f"{type(exc).__name__}: {exc}"
            reason = f"unreadable shard after line {line_no}: {detail}"
            yield beam.pvalue.TaggedOutput("unreadable", error_record("read", reason, None, source, line_no + 1))


def parse_line(raw: RawLine, max_document_bytes: int, id_field: str, text_field: str) -> Document:
    """A raw line -> a Document, or raises DocumentError with the reason."""
    if raw.data is None:
        raise DocumentError(f"document too large: {raw.n_bytes} bytes > --max_document_bytes={max_document_bytes}")
    try:
        line = raw.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"invalid UTF-8 at byte {exc.start}") from None
    if raw.line == 1:
        line = line.removeprefix("\ufeff")
    if "\x00" in line:
        raise DocumentError(f"NUL byte at character {line.index(chr(0))} (binary data?)")
    doc_id = f"{raw.source}:{raw.line}"
    if not raw.json_lines:
        return Document(doc_id, line, raw.source, raw.line)
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"malformed JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(record, dict):
        raise DocumentError(f"a JSON line must be an object, not {type(record).__name__}")
    text = record.get(text_field)
    if not isinstance(text, str):
        raise DocumentError(f"no string {text_field!r} field")
    if not text.strip():
        raise DocumentError("empty document")
    own_id = record.get(id_field)
    if own_id is not None:
        if not isinstance(own_id, str | int) or isinstance(own_id, bool) or own_id == "":
            raise DocumentError(f"{id_field!r} must be a non-empty string or an integer")
        doc_id = str(own_id)
    if "\x00" in text:
        raise DocumentError(f"NUL character at {text.index(chr(0))} of {text_field!r} (binary data?)")
    try:
        (text + doc_id).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DocumentError(f"unpaired surrogate \\u{ord(exc.object[exc.start]):04x} in a JSON string") from None
    return Document(doc_id, text, raw.source, raw.line)


def raw_line_error(bad: tuple[RawLine, tuple]) -> dict:
    """A dead-lettered RawLine -> its error record."""
    raw, exc_info = bad
    excerpt = raw.data.decode("utf-8", "replace") if raw.data is not None else ""
    return error_record("parse", exception_reason(exc_info), f"{raw.source}:{raw.line}", raw.source, raw.line, excerpt)


class ReadDocuments(beam.PTransform):
    """PBegin -> (PCollection[Document], PCollection[dict error record]).

    Reads every shard in ``files`` (compression from the suffix), one document per non-blank line. Plain-text
    documents get the id ``<shard path relative to root>:<line>``; JSON lines use their ``id_field`` when present.
    Lines that cannot become a document (too large, invalid UTF-8, NUL bytes, malformed JSON, no text) and
    unreadable shards (missing, truncated or corrupt compressed data: one record each, after the whole lines read
    before the break) become error records; blank lines (only whitespace and format characters, ``is_blank``) are
    skipped (counter ``blank_lines_skipped``).
    """

    def __init__(
        self,
        files: Sequence[str],
        root: str,
        input_format: str = "auto",
        id_field: str = "id",
        text_field: str = "text",
        max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    ):
        super().__init__()
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, not {input_format!r}")
        self._files = list(files)
        self._root = root
        self._format = input_format
        self._id_field = id_field
        self._text_field = text_field
        self._max_bytes = max_document_bytes

    def expand(self, pbegin):
        lines = (
            pbegin
            | "ListShards" >> beam.Create(self._files)
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadLines"
            >> beam.ParDo(ReadLinesFn(self._root, self._format, self._max_bytes)).with_outputs(
                "unreadable", main="lines"
            )
        )
        documents, bad = (
            lines.lines
            | "ParseLines"
            >> beam.Map(parse_line, self._max_bytes, self._id_field, self._text_field).with_exception_handling()
        )
        parse_errors = bad | "ParseErrors" >> beam.Map(raw_line_error)
        errors = (parse_errors, lines.unreadable) | "ReadErrors" >> beam.Flatten()
        return documents, errors
