"""Text cleaning: whitespace, hard-wrapped paragraphs, noise lines, and the markup of each source format.

Every function here is pure (text in, text out) so it can be tested offline on small strings.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser

_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u2060\ufeff"), None)  # soft hyphen, zero-widths, BOM
_SPACE_RE = re.compile(r"\s+")
_BLANK_LINE_RE = re.compile(r"\n[ \t\r\f\v]*\n")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")


def normalize_whitespace(text: str) -> str:
    """NFC-normalises, drops invisible/control characters and collapses every whitespace run to one space."""
    text = _CONTROL_RE.sub(" ", unicodedata.normalize("NFC", text).translate(_INVISIBLE))
    return _SPACE_RE.sub(" ", text).strip()


def letter_ratio(text: str) -> float:
    """Letters / non-space characters (0.0 for text without any)."""
    visible = [c for c in text if not c.isspace()]
    if not visible:
        return 0.0
    return sum(c.isalpha() for c in visible) / len(visible)


def is_mostly_text(line: str, min_ratio: float = 0.5) -> bool:
    """Whether a line is mostly letters (False for ASCII art, rulers, tables of figures, blank lines)."""
    return letter_ratio(line) >= min_ratio


def join_paragraphs(text: str, min_ratio: float = 0.5) -> list[str]:
    """Blank-line-delimited paragraphs with hard-wrapped lines joined; mostly non-letter lines are dropped first."""
    out = []
    for block in _BLANK_LINE_RE.split(text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = [line for line in block.split("\n") if is_mostly_text(line, min_ratio)]
        paragraph = normalize_whitespace(" ".join(lines))
        if paragraph:
            out.append(paragraph)
    return out


def is_heading(line: str) -> bool:
    """A heading or speaker line of a play or novel: no lower-case letter at all (``MASTER.``, ``ACT 1``)."""
    letters = [c for c in line if c.isalpha()]
    return bool(letters) and not any(c.islower() for c in letters)


def drop_headings(text: str) -> str:
    """Blanks out heading/speaker lines, so they neither join a paragraph nor become a sentence."""
    return "\n".join("" if is_heading(line) else line for line in text.split("\n"))


# --- fortune(6) files ------------------------------------------------------------------------------------------


def fortune_records(text: str) -> list[str]:
    """The records of a fortune file (separated by lines holding only ``%``)."""
    return [record for record in re.split(r"(?m)^%\s*$", text) if record.strip()]


# --- dictd databases (``*.dict.dz`` + ``*.index``) -------------------------------------------------------------

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def dictd_number(code: str) -> int:
    """Decodes dictd's base-64 offsets and lengths (most significant digit first)."""
    value = 0
    for char in code:
        value = value * 64 + _B64.index(char)
    return value


def dictd_entries(data: bytes, index: str) -> list[str]:
    """The entries of a dictd database in file order, each once, without its ``00-database-*`` header entries."""
    spans = {}
    for line in index.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00database") or parts[0].startswith("00-database"):
            continue
        spans[dictd_number(parts[1])] = dictd_number(parts[2])
    return [data[start : start + length].decode("utf-8", errors="replace") for start, length in sorted(spans.items())]


_DOMAIN_TAG_RE = re.compile(r"^<[a-z][a-z, ]*>\s*")  # FOLDOC's "<programming>"
_BRACES_RE = re.compile(r"[{}]")  # cross-references: {stack} -> stack
_DEVIL_HEAD_RE = re.compile(r"^[^\n,.]{1,60},\s*(?:[a-z]{1,5}\.\s*)+")  # "ABSOLUTE, adj. "


def dictd_body(entry: str, inline_headword: bool = False) -> str:
    """The text of one dictd entry without its headword block.

    Jargon and FOLDOC entries start with headword (and pronunciation) lines ended by a blank line; the Devil's
    Dictionary starts its first paragraph with ``WORD, pos.`` instead (``inline_headword``).
    """
    if inline_headword:
        body = _DEVIL_HEAD_RE.sub("", entry.lstrip(), count=1)
    else:
        parts = _BLANK_LINE_RE.split(entry, maxsplit=1)
        body = parts[1] if len(parts) == 2 else ""
    return _BRACES_RE.sub("", body)


def dictd_paragraphs(entry: str, inline_headword: bool = False) -> list[str]:
    """Paragraphs of one dictd entry (headword, domain tags and cross-reference braces removed)."""
    out = []
    for paragraph in join_paragraphs(dictd_body(entry, inline_headword)):
        paragraph = _DOMAIN_TAG_RE.sub("", paragraph)
        if paragraph:
            out.append(paragraph)
    return out


# --- SWORD OSIS (mod2imp output) -------------------------------------------------------------------------------

_IMP_KEY_RE = re.compile(r"^\$\$\$(.*)$", re.MULTILINE)
_OSIS_DROP_RE = re.compile(r"<(note|title)\b[^>]*>.*?</\1>|<(?:note|title)\b[^>]*/>", re.DOTALL)
_OSIS_PARA_RE = re.compile(r'<div\b[^>]*\b([se])ID="([^"]+)"[^>]*type="x-p"[^>]*/>|<chapter\b[^>]*/>')
_OSIS_SPACE_RE = re.compile(r"</(?:l|lg|p|item|list)>|<(?:lb|l|lg)\b[^>]*/>")  # line ends inside a paragraph
_TAG_RE = re.compile(r"<[^>]+>")


def imp_entries(imp: str) -> Iterator[tuple[str, str]]:
    """``(key, body)`` pairs of a SWORD import file (``$$$key`` lines, each followed by its entry)."""
    matches = list(_IMP_KEY_RE.finditer(imp))
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following else len(imp)
        yield match.group(1).strip(), imp[match.end() : end]


def osis_paragraphs(entries: Iterable[str]) -> Iterator[str]:
    """Paragraphs of OSIS entries in order: notes and titles dropped, tags stripped, each ``x-p`` paragraph once.

    Verses without paragraph markers run on into one paragraph until the next marker or chapter. libsword 1.9
    returns a commentary entry followed by the rest of its compressed block, so the first paragraph id seen before
    marks the start of repeated text: the rest of that entry is skipped.
    """
    seen: set[str] = set()
    buffer: list[str] = []
    for entry in entries:
        text = _OSIS_SPACE_RE.sub(" ", _OSIS_DROP_RE.sub(" ", entry))
        pos = 0
        for marker in _OSIS_PARA_RE.finditer(text):
            buffer.append(text[pos : marker.start()])
            pos = marker.end()
            yield from _flush(buffer)
            kind, ident = marker.group(1), marker.group(2)
            if kind == "s" and ident in seen:
                pos = len(text)
                break
            if kind == "s":
                seen.add(ident)
        buffer.append(text[pos:])
        buffer.append(" ")
    yield from _flush(buffer)


def _flush(buffer: list[str]) -> Iterator[str]:
    paragraph = normalize_whitespace(html.unescape(_TAG_RE.sub("", "".join(buffer))).replace("¶", " "))
    buffer.clear()
    if paragraph:
        yield paragraph


# --- MediaWiki markup ------------------------------------------------------------------------------------------

_WIKI_COMMENT_RE = re.compile(r"<!--.*?-->", re.DOTALL)
_WIKI_REF_RE = re.compile(r"<ref\b[^>/]*/>|<ref\b[^>]*>.*?</ref>", re.DOTALL | re.IGNORECASE)
_WIKI_BLOCK_RE = re.compile(r"<(math|gallery|timeline|code|pre|source)\b.*?</\1>", re.DOTALL | re.IGNORECASE)
_WIKI_TEMPLATE_RE = re.compile(r"\{\{[^{}]*\}\}")
_WIKI_TABLE_RE = re.compile(r"\{\|(?:(?!\{\|).)*?\|\}", re.DOTALL)
_WIKI_NS_LINK_RE = re.compile(r"\[\[(?:[A-Za-z]+(?:-[a-z]+)?):[^\[\]]*\]\]")
_WIKI_LINK_RE = re.compile(r"\[\[(?:[^\[\]|]*\|)?([^\[\]|]*)\]\]")
_WIKI_EXT_LINK_RE = re.compile(r"\[(?:https?|ftp)://[^\s\]]*\s*([^\]]*)\]")
_WIKI_LIST_RE = re.compile(r"^[*#:;]+\s*")


def _until_stable(pattern: re.Pattern[str], replacement: str, text: str) -> str:
    """Applies a substitution repeatedly, for nested constructs (innermost first)."""
    while True:
        new = pattern.sub(replacement, text)
        if new == text:
            return text
        text = new


def strip_wikitext(text: str, min_words: int = 8) -> list[str]:
    """Prose paragraphs of a MediaWiki article: templates, tables, refs, files, categories and headings removed,
    links replaced by their label; only lines of at least ``min_words`` words are kept."""
    text = _WIKI_COMMENT_RE.sub("", text)
    text = _WIKI_REF_RE.sub("", text)
    text = _WIKI_BLOCK_RE.sub("", text)
    text = _until_stable(_WIKI_TEMPLATE_RE, "", text)
    text = _until_stable(_WIKI_TABLE_RE, "", text)
    while True:  # links inside file captions first, then the file/category/interwiki link itself
        new = _WIKI_NS_LINK_RE.sub("", _WIKI_LINK_RE.sub(r"\1", text))
        if new == text:
            break
        text = new
    text = _WIKI_EXT_LINK_RE.sub(r"\1", text)
    text = html.unescape(_TAG_RE.sub("", text.replace("'''", "").replace("''", "")))
    out = []
    for line in text.split("\n"):
        line = _WIKI_LIST_RE.sub("", line.strip())
        if not line or line.startswith(("=", "|", "!", "{", "}")):
            continue
        paragraph = normalize_whitespace(line)
        if len(paragraph.split()) >= min_words and is_mostly_text(paragraph):
            out.append(paragraph)
    return out


# --- HTML manuals --------------------------------------------------------------------------------------------------


class _ParagraphCollector(HTMLParser):
    """Collects the text of ``<p>`` elements and of Publican's ``<div class="para">``; code (``<pre>``), scripts and
    styles are skipped, inline markup inside a paragraph (``<code>``, ``<a>``, ``<em>``) keeps its text."""

    SKIPPED = frozenset({"pre", "script", "style"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._parts: list[str] = []
        self._in_paragraph = False
        self._skipping = 0
        self._para_divs = 0  # open <div> elements since a <div class="para"> began (0: not in one)

    def _flush(self) -> None:
        paragraph = normalize_whitespace("".join(self._parts))
        if paragraph and is_mostly_text(paragraph):
            self.paragraphs.append(paragraph)
        self._parts = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIPPED:
            self._skipping += 1
        elif tag == "p" or (tag == "div" and "para" in (dict(attrs).get("class") or "").split()):
            self._flush()
            self._in_paragraph = True
            self._para_divs = 1 if tag == "div" else 0
        elif tag == "div" and self._para_divs:
            self._para_divs += 1
        elif tag == "br":
            self._parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif tag == "p" or (tag == "div" and self._para_divs == 1):
            self._flush()
            self._in_paragraph = False
            self._para_divs = 0
        elif tag == "div" and self._para_divs:
            self._para_divs -= 1

    def handle_data(self, data: str) -> None:
        if self._in_paragraph and not self._skipping:
            self._parts.append(data)


def html_paragraphs(page: str) -> list[str]:
    """The running-text paragraphs (``<p>`` and Publican ``<div class="para">`` elements) of an HTML page,
    whitespace-normalised, mostly-letter ones only; code blocks, navigation, tables and headings are left out."""
    collector = _ParagraphCollector()
    collector.feed(page)
    collector.close()
    collector._flush()
    return collector.paragraphs


# --- man pages ------------------------------------------------------------------------------------------------------

MAN_SKIPPED_SECTIONS = frozenset(
    {"NAME", "SYNOPSIS", "SEE ALSO", "COLOPHON", "EXAMPLES", "EXAMPLE", "ATTRIBUTES", "LIBRARY", "FILES", "AUTHORS",
     "AUTHOR", "COPYRIGHT"}
)  # fmt: skip
MAN_CODE_ENDINGS = (";", "{", "}")  # C declarations and prototypes listed in the text (prose ends otherwise)
MAN_TEXT_INDENTS = (7, 14)  # body text and tagged-paragraph text; code blocks (.EX, .in +4n) sit deeper


def man_paragraphs(rendered: str) -> list[str]:
    """The prose paragraphs of one man page rendered by ``man -l`` with a very wide ``MANWIDTH`` (a paragraph per
    line). Headers and footers, the sections in ``MAN_SKIPPED_SECTIONS`` (synopses, examples, references), code
    blocks (any line not at one of ``MAN_TEXT_INDENTS``) and C declarations (``MAN_CODE_ENDINGS``) are left out."""
    lines = [line.rstrip() for line in re.sub(r".\x08", "", rendered).split("\n")]
    filled = [i for i, line in enumerate(lines) if line.strip()]
    if len(filled) < 3:
        return []
    out: list[str] = []
    section = ""
    for line in lines[filled[0] + 1 : filled[-1]]:  # without the page's header and footer lines
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            section = line.strip().upper()
            continue
        if section in MAN_SKIPPED_SECTIONS or indent not in MAN_TEXT_INDENTS:
            continue
        paragraph = normalize_whitespace(line)
        if is_mostly_text(paragraph) and not paragraph.endswith(MAN_CODE_ENDINGS):
            out.append(paragraph)
    return out
