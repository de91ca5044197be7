"""A minimal reader for R's lazy-load databases (``Rdata.rdb`` / ``Rdata.rdx``), enough to get character vectors.

R packages such as ``janeaustenr`` store their data sets as a lazy-load database: ``*.rdx`` is a zlib-compressed,
XDR-serialized index (a named list whose ``variables`` element maps object names to ``(offset, length)`` in
``*.rdb``), and every object in ``*.rdb`` is its own zlib-compressed XDR serialization. This module decodes the
subset of the serialization format (R Internals, section 1.8) that data packages use, so no R is needed.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

# SEXP type codes (R Internals 1.1) and the serialization's special codes.
_NILSXP, _SYMSXP, _LISTSXP, _CLOSXP, _ENVSXP, _PROMSXP, _LANGSXP = 0, 1, 2, 3, 4, 5, 6
_CHARSXP, _LGLSXP, _INTSXP, _REALSXP, _CPLXSXP, _STRSXP, _DOTSXP = 9, 10, 13, 14, 15, 16, 17
_VECSXP, _EXPRSXP, _RAWSXP = 19, 20, 24
_REFSXP, _NILVALUE, _PERSIST, _PACKAGE, _NAMESPACE = 255, 254, 247, 248, 249
_ENV_SINGLETONS = frozenset({253, 252, 251, 250, 242, 241})  # global/empty/base env, unbound, missing, base ns
_PAIRLISTS = frozenset({_LISTSXP, _LANGSXP, _CLOSXP, _PROMSXP, _DOTSXP, 240, 239})


@dataclass
class RObject:
    """A decoded R value: ``value`` is a Python list/str/None; ``attributes`` maps tag -> value."""

    type: int
    value: object
    attributes: dict[str, object] = field(default_factory=dict)


class _Reader:
    """Reads one XDR serialization stream (format versions 2 and 3)."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.refs = data, 0, []
        if data[:2] != b"X\n":
            raise ValueError("not an XDR R serialization (expected 'X\\n')")
        self.pos = 2
        version = self.int()
        self.int(), self.int()  # writer and minimal reader R versions
        if version == 3:
            n = self.int()  # then the native encoding's name
            self.pos += n
        elif version != 2:
            raise ValueError(f"unsupported R serialization version {version}")

    def int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def length(self) -> int:
        n = self.int()
        return (self.int() << 32) + self.int() if n == -1 else n

    def item(self) -> object:
        """Reads one item; returns an ``RObject``, a ``str`` (CHARSXP/symbol) or ``None``."""
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, bool(flags & 0x200), bool(flags & 0x400)
        if kind == _NILVALUE or kind in _ENV_SINGLETONS:
            return None
        if kind == _REFSXP:
            index = flags >> 8 or self.int()
            return self.refs[index - 1]
        if kind in (_PERSIST, _PACKAGE, _NAMESPACE):
            if self.int() != 0:
                raise ValueError("bad persistent string vector")
            obj = RObject(kind, [self.item() for _ in range(self.int())])
            self.refs.append(obj)
            return obj
        if kind == _SYMSXP:
            name = self.item()
            self.refs.append(name)
            return name
        if kind == _ENVSXP:
            return self._environment()
        if kind in _PAIRLISTS:
            return self._pairlist(kind, has_attr, has_tag)
        return self._vector(kind, has_attr)

    def _environment(self) -> RObject:
        obj = RObject(_ENVSXP, None)
        self.refs.append(obj)
        self.int()  # locked
        obj.value = [self.item() for _ in range(3)]  # enclosure, frame, hash table
        self.item()  # attributes
        return obj

    def _pairlist(self, kind: int, has_attr: bool, has_tag: bool) -> RObject:
        attributes = self.item() if has_attr else None
        tag = self.item() if has_tag else None
        head = self.item()
        tail = self.item()
        items = [(tag, head)]
        if isinstance(tail, RObject) and tail.type == _LISTSXP and isinstance(tail.value, list):
            items.extend(tail.value)
        return RObject(kind, items, _attrs(attributes))

    def _vector(self, kind: int, has_attr: bool) -> object:
        if kind == _CHARSXP:
            n = self.int()
            if n == -1:
                return None
            text = self.data[self.pos : self.pos + n].decode("utf-8", errors="replace")
            self.pos += n
            return text
        n = self.length()
        if kind in (_LGLSXP, _INTSXP):
            value = list(struct.unpack_from(f">{n}i", self.data, self.pos))
            self.pos += 4 * n
        elif kind == _REALSXP:
            value = list(struct.unpack_from(f">{n}d", self.data, self.pos))
            self.pos += 8 * n
        elif kind == _CPLXSXP:
            value = list(struct.unpack_from(f">{2 * n}d", self.data, self.pos))
            self.pos += 16 * n
        elif kind == _RAWSXP:
            value = self.data[self.pos : self.pos + n]
            self.pos += n
        elif kind in (_STRSXP, _VECSXP, _EXPRSXP):
            value = [self.item() for _ in range(n)]
        else:
            raise ValueError(f"unsupported SEXP type {kind}")
        attributes = self.item() if has_attr else None
        return RObject(kind, value, _attrs(attributes))


def _attrs(pairlist: object) -> dict[str, object]:
    if isinstance(pairlist, RObject) and isinstance(pairlist.value, list):
        return {str(tag): value for tag, value in pairlist.value}
    return {}


def unserialize(data: bytes) -> object:
    """Decodes one XDR R serialization."""
    return _Reader(data).item()


def _inflate(block: bytes) -> bytes:
    """A lazy-load block: 4-byte big-endian uncompressed size, then a zlib stream."""
    (size,) = struct.unpack_from(">I", block, 0)
    data = zlib.decompress(block[4:])
    if len(data) != size:
        raise ValueError("lazy-load block has the wrong uncompressed size")
    return data


def named(obj: RObject) -> dict[str, object]:
    """A named R list as a dict."""
    names = obj.attributes.get("names")
    if not isinstance(names, RObject):
        raise ValueError("R list has no names")
    return dict(zip(names.value, obj.value, strict=True))


def load_lazy_db(rdx: Path) -> dict[str, object]:
    """All objects of the lazy-load database ``rdx`` (and the ``.rdb`` beside it), by name.

    The index is gzip (``saveRDS``) in data packages and a lazy-load block in code packages; both are accepted.
    """
    raw = rdx.read_bytes()
    index = unserialize(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else _inflate(raw))
    if not isinstance(index, RObject):
        raise ValueError(f"{rdx}: not a lazy-load index")
    variables = named(index)["variables"]
    rdb = rdx.with_suffix(".rdb").read_bytes()
    out: dict[str, object] = {}
    for name, span in named(variables).items():
        offset, length = (int(x) for x in span.value)
        out[name] = unserialize(_inflate(rdb[offset : offset + length]))
    return out


def character_vectors(rdx: Path) -> dict[str, list[str]]:
    """The character vectors (``STRSXP``) of a lazy-load database, by name; NA becomes ``""``."""
    return {
        name: [s or "" for s in obj.value]
        for name, obj in sorted(load_lazy_db(rdx).items())
        if isinstance(obj, RObject) and obj.type == _STRSXP
    }
