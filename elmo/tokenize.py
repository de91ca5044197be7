"""Sentence splitting and PTB-like tokenization with character offsets, in pure Python (no Beam, no torch).

The scheme and its settings are stored next to a model as ``tokenizer.json``, so text is cut at inference exactly as
it was for training. Offsets are Python string indices (code points) into the original text: ``text[t.start:t.end]
== t.text`` for every token, because tokens are never rewritten (quotes stay as written, nothing is normalised).

>>> tok = Tokenizer()
>>> [s.texts() for s in tok.sentences("Mr. Smith didn't go. He stayed home!")]
[['Mr.', 'Smith', 'did', "n't", 'go', '.'], ['He', 'stayed', 'home', '!']]

Rules of ``scheme`` ``ptb-regex``, version 1 (``tokenizer.json`` ``"version": 1``, kept for models trained with it):

* Tokens: URLs and e-mail addresses; known abbreviations (``Mr.``, ``etc.``, ``U.S.``) and single capital initials
  keep their period; numbers keep inner ``.,:/-`` (``3.14``, ``1,000``, ``12:30``); words keep inner hyphens and
  apostrophes, then PTB contractions are split off (``didn't`` -> ``did n't``, ``it's`` -> ``it 's``); ``...``,
  ``--`` and runs of ``!``/``?`` are one token; each CJK ideograph or kana is a token of its own; a run of emoji
  (with joiners and modifiers) is one token; any other non-space character is a token by itself.
* Sentences end after ``.``, ``!``, ``?``, ``...`` or runs of them (plus any closing quotes or brackets) when the
  next token does not start with a lower-case letter, after ``。！？`` always, and at every line break run that
  holds a blank line (a paragraph break).

Version 1 works on code points, so it splits combining marks off their letters (decomposed ``tre\u0300s`` ->
``tre``, ``\u0300``, ``s``), cuts Indic words at every vowel sign and virama, and makes tokens of invisible format
characters (bidi controls, U+2060, the soft hyphen).

Version 2 (the default, ``VERSION``) keeps every rule of version 1 but applies them to whole characters, the
extended grapheme clusters of Unicode (``regex``'s ``\\X``):

* Each cluster is seen as its base character: the rules above decide on the base, and a token covers its clusters
  entirely (the base plus its combining marks, vowel signs, viramas, variation selectors, ZWJ/ZWNJ and emoji
  modifiers). ``tre\u0300s`` is one token of 5 code points; Devanagari ``हिन्दी`` is one token. A ZWJ or ZWNJ
  inside a word (Indic conjuncts, Persian ``می‌خواهم``) belongs to the cluster before it and so stays in the token:
  it is part of the word's spelling. A mark that Unicode does not attach (some Myanmar vowel signs, or a mark right
  after a format character) is attached to the cluster before it, so no token ever starts with a combining mark.
* Whitespace is Unicode's (``str.isspace``: NBSP, U+2007, U+202F, U+2028/2029, U+3000, ...). A cluster holding
  whitespace (a prepended mark before a space) is whitespace, and so is a mark with nothing before it.
* Format characters (category Cf: ZWSP, bidi controls, U+2060, U+FEFF, the soft hyphen, ...) that are not inside a
  cluster separate tokens and are never tokens themselves, with one exception: the soft hyphen U+00AD, the word
  joiner U+2060 and U+FEFF between two word characters mean "no word break here" and keep the word whole
  (``co\u00adoperate`` is one token).
* Paragraph breaks are a line break run holding a line of only whitespace and format characters, or U+2029.
* Scripts written without spaces (Thai, Lao, Khmer, Myanmar) get no dictionary segmentation: a run of their
  letters is one word token (the char-CNN reads its first 48 bytes), but a grapheme cluster is never split, so
  vowel signs and tone marks stay on their consonant.

On text without combining marks, format characters or Hangul jamo (plain English) version 2 gives exactly the
tokens, offsets and sentences of version 1 (``tests/test_hostile_text.py`` checks it on real English text).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import regex

SCHEME = "ptb-regex"
VERSION = 2  # the rules new models are trained with
VERSIONS = (1, 2)  # every rule version this code can still cut text by

# Abbreviations that keep their period (lower-cased, without the period).
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt ft gen gov col capt lt sgt rev hon pres sen rep messrs mme mlle "
    "jan feb mar apr jun jul aug sep sept oct nov dec "
    "etc vs viz cf al approx dept est fig inc ltd co corp no nos vol vols pp ch sec art".split()
)

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_EMOJI = "\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff"
_EMOJI_JOIN = "\u200d\ufe0f\U0001f3fb-\U0001f3ff"
_JOINERS = "\u00ad\u2060\ufeff"  # soft hyphen, word joiner, zero-width no-break space: "no word break here"
_JOINER_SET = frozenset(_JOINERS)


def _token_re(connectors: str, not_other: str) -> re.Pattern[str]:
    """The token pattern; ``connectors`` may join two runs of word characters, ``not_other`` are never tokens."""
    return re.compile(
        r"""
    (?P<url>(?:https?://|www\.)[^\s<>"']*[^\s<>"'.,;:!?)\]}])
  | (?P<email>[\w.+-]+@[\w-]+(?:\.[\w-]+)+)
  | (?P<initials>(?:[A-Za-z]\.){2,})
  | (?P<number>(?>[+-]?\d+(?:[.,:/-]\d+)*)(?![^\W\d_]))
  | (?P<cjk>["""
        + _CJK
        + r"""])
  | (?P<emoji>["""
        + _EMOJI
        + r"""]["""
        + _EMOJI
        + _EMOJI_JOIN
        + r"""]*)
  | (?P<word>(?:(?!["""
        + _CJK
        + r"""])\w)+(?:["""
        + connectors
        + r"""](?:(?!["""
        + _CJK
        + r"""])\w)+)*(?:\.(?!\.))?)
  | (?P<ellipsis>\.{2,}|…)
  | (?P<dash>-{2,}|—|–)
  | (?P<bang>[!?]+)
  | (?P<other>[^\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff"""
        + not_other
        + r"""])
    """,
        re.VERBOSE,
    )


_TOKEN_RE_V1 = _token_re("'’-", "")
_TOKEN_RE_V2 = _token_re("'’\\-" + _JOINERS, _JOINERS)  # runs over the cluster view (see ``_cluster_view``)
_CONTRACTION_RE = re.compile(r"(?i)(?:n['’]t|['’](?:s|m|d|re|ve|ll))$")
_SENTENCE_END = frozenset({".", "!", "?", "...", "…", "。", "！", "？"})
_ALWAYS_END = frozenset({"。", "！", "？"})
_CLOSERS = frozenset({'"', "'", ")", "]", "}", "’", "”", "»", "」", "』"})
_PARAGRAPH_RE_V1 = re.compile(r"\n[ \t\r\f\v]*\n")
_PARAGRAPH_RE_V2 = regex.compile(r"\n(?:(?!\n)[\s\p{Cf}])*\n|\u2029")
_CLUSTER_RE = regex.compile(r"\X")
# A code point that can share a grapheme cluster with another (or is a format character): without any, every
# cluster is one code point (or CR LF) and version 2 can run on the text itself.
_CLUSTERED_RE = regex.compile(
    r"[\p{M}\p{Cf}\p{GCB=Extend}\p{GCB=ZWJ}\p{GCB=SpacingMark}\p{GCB=Prepend}\p{GCB=L}\p{GCB=V}\p{GCB=T}"
    r"\p{GCB=Regional_Indicator}]"
)
_SPACE_RE = re.compile(r"\s")  # str.isspace, the same whitespace as the token patterns' \s
_BASE_RE = regex.compile(r"[^\p{M}\p{Cf}]")  # a cluster's base: its first code point that is no mark or format
_MARKS_RE = regex.compile(r"\p{M}*")


@dataclass(frozen=True)
class _Rules:
    """What one rule version runs: the token and paragraph patterns, and whether on grapheme clusters."""

    token_re: re.Pattern[str]
    paragraph_re: re.Pattern[str] | regex.Pattern[str]
    graphemes: bool


_RULES = {1: _Rules(_TOKEN_RE_V1, _PARAGRAPH_RE_V1, False), 2: _Rules(_TOKEN_RE_V2, _PARAGRAPH_RE_V2, True)}


@dataclass(frozen=True)
class TokenizerConfig:
    """The settings stored in a model directory's ``tokenizer.json``."""

    scheme: str = SCHEME  # the only scheme so far; a model trained otherwise must name its own
    version: int = VERSION  # the rule version the model was trained with (one of VERSIONS), bumped on any change
    split_sentences: bool = True  # False: a whole document is one "sentence" (still windowed when long)
    split_contractions: bool = True  # PTB: didn't -> did n't
    lowercase: bool = False  # the published ELMo models are case-sensitive
    max_sentence_tokens: int = 256  # longest sentence seen in training; longer ones are embedded in windows
    window_overlap: int = 32  # tokens shared by consecutive windows of a long sentence
    notes: dict[str, str] = field(default_factory=dict)  # free text (e.g. where the training text came from)

    def __post_init__(self) -> None:
        if self.scheme != SCHEME:
            raise ValueError(f"unknown tokenizer scheme {self.scheme!r}; this code implements {SCHEME!r}")
        if type(self.version) is not int or self.version not in VERSIONS:
            raise ValueError(
                f"tokenizer version {self.version!r} asked for; this code implements versions {VERSIONS} "
                "(a model trained with newer rules needs newer code)"
            )
        if self.max_sentence_tokens < 1 or not 0 <= self.window_overlap < self.max_sentence_tokens:
            raise ValueError("need max_sentence_tokens >= 1 and 0 <= window_overlap < max_sentence_tokens")

    @classmethod
    def from_json(cls, text: str) -> TokenizerConfig:
        """Parses ``tokenizer.json`` text; unknown keys are an error (a newer file than this code)."""
        data = json.loads(text)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"tokenizer.json has keys this code does not know: {sorted(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        """The ``tokenizer.json`` text."""
        return json.dumps(asdict(self), indent=2) + "\n"


class Token(NamedTuple):
    """One token: its text and its span ``[start, end)`` in code points of the document (a named tuple: made 200k
    times per 200k tokens, 3x cheaper than a frozen dataclass)."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Sentence:
    """A sentence: its span in the document and its tokens (never empty)."""

    start: int
    end: int
    tokens: tuple[Token, ...]

    def texts(self) -> list[str]:
        """The token strings."""
        return [t.text for t in self.tokens]


class Tokenizer:
    """Tokenizes and sentence-splits text by the rules of one ``TokenizerConfig``."""

    def __init__(self, config: TokenizerConfig | None = None):
        self.config = config or TokenizerConfig()

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        """A tokenizer from ``tokenizer.json`` text."""
        return cls(TokenizerConfig.from_json(text))

    def tokens(self, text: str) -> list[Token]:
        """All tokens of ``text`` with their offsets."""
        rules = _RULES[self.config.version]
        view, starts = _cluster_view(text) if rules.graphemes else (text, None)
        out: list[Token] = []
        for match in rules.token_re.finditer(view):
            value, at = match.group(), match.start()
            spans = self._split_word(value) if match.lastgroup == "word" else [(0, len(value))]
            for first, last in spans:
                start, end = (at + first, at + last) if starts is None else (starts[at + first], starts[at + last])
                out.append(Token(text[start:end], start, end))
        if self.config.lowercase:
            out = [Token(t.text.lower(), t.start, t.end) for t in out]
        return out

    def _split_word(self, value: str) -> list[tuple[int, int]]:
        """A ``word`` match -> spans in it of word (+ contraction) (+ final period unless an abbreviation)."""
        spans: list[tuple[int, int]] = []
        period = value.endswith(".") and value[:-1].lower() not in ABBREVIATIONS and not _is_initial(value)
        if period:
            value = value[:-1]
        cut = _CONTRACTION_RE.search(value) if self.config.split_contractions else None
        if cut and cut.start() > 0:
            spans += [(0, cut.start()), (cut.start(), len(value))]
        else:
            spans.append((0, len(value)))
        if period:
            spans.append((len(value), len(value) + 1))
        return spans

    def sentences(self, text: str) -> list[Sentence]:
        """Splits ``text`` into sentences of tokens (empty list when there is no token)."""
        tokens = self.tokens(text)
        if not tokens:
            return []
        if not self.config.split_sentences:
            return [Sentence(tokens[0].start, tokens[-1].end, tuple(tokens))]
        breaks = {m.start() for m in _RULES[self.config.version].paragraph_re.finditer(text)}
        paragraph_ends = sorted(breaks)
        sentences: list[Sentence] = []
        current: list[Token] = []
        next_break = 0
        for i, token in enumerate(tokens):
            # A paragraph break between the previous token and this one closes the sentence.
            while next_break < len(paragraph_ends) and paragraph_ends[next_break] < token.start:
                if current and paragraph_ends[next_break] >= current[-1].end:
                    sentences.append(_sentence(current))
                    current = []
                next_break += 1
            current.append(token)
            if _ends_sentence(tokens, i):
                sentences.append(_sentence(current))
                current = []
        if current:
            sentences.append(_sentence(current))
        return sentences


def _cluster_view(text: str) -> tuple[str, list[int] | None]:
    """``text`` as one character per grapheme cluster, and where each cluster starts (plus ``len(text)``).

    A cluster is seen as its base character; one holding whitespace, or with no base (a lone format character), as
    a space; a lone joiner (``_JOINERS``) as itself. Marks that start a cluster (Unicode leaves some unattached)
    are merged into the cluster before, or seen as a space at the start of the text. Text whose clusters are all
    single code points is its own view (``None``: offsets unchanged).
    """
    if _CLUSTERED_RE.search(text) is None:
        return text, None
    chars: list[str] = []
    starts: list[int] = []
    for match in _CLUSTER_RE.finditer(text):
        start, cluster = match.start(), match.group()
        marks = _MARKS_RE.match(cluster).end()
        if marks and not starts:
            chars.append(" ")
            starts.append(start)
        if marks < len(cluster):
            chars.append(_view_char(cluster[marks:]))
            starts.append(start + marks)
    starts.append(len(text))
    return "".join(chars), starts


def _view_char(cluster: str) -> str:
    """The character that stands for one grapheme cluster in the cluster view."""
    if _SPACE_RE.search(cluster):
        return " "
    if cluster in _JOINER_SET:
        return cluster
    base = _BASE_RE.search(cluster)
    return " " if base is None else base.group()


def _is_initial(value: str) -> bool:
    """``J.`` (a single capital and a period) is an initial, not a sentence end."""
    return len(value) == 2 and value[0].isupper()


def _sentence(tokens: list[Token]) -> Sentence:
    return Sentence(tokens[0].start, tokens[-1].end, tuple(tokens))


def _ends_sentence(tokens: list[Token], i: int) -> bool:
    """Whether a sentence ends right after ``tokens[i]``."""
    text = tokens[i].text
    if text in _CLOSERS:
        # A closing quote/bracket ends the sentence when it follows an end mark directly.
        j = i
        while j > 0 and tokens[j].text in _CLOSERS:
            j -= 1
        if j == i or not _is_end_mark(tokens[j].text) or j < i - 3:
            return False
    elif not _is_end_mark(text):
        return False
    if text in _ALWAYS_END:
        return True
    if i + 1 == len(tokens):
        return True
    following = tokens[i + 1].text
    if following in _CLOSERS:
        return False  # the closer belongs to this sentence; decide after it
    return not following[0].islower()


def _is_end_mark(text: str) -> bool:
    return text in _SENTENCE_END or (len(text) > 1 and set(text) <= {"!", "?"})
