"""Sentence splitting and PTB-like tokenization with character offsets, in pure Python (no Beam, no torch).

The scheme and its settings are stored next to a model as ``tokenizer.json``, so text is cut at inference exactly as
it was for training. Offsets are Python string indices (code points) into the original text: ``text[t.start:t.end]
== t.text`` for every token, because tokens are never rewritten (quotes stay as written, nothing is normalised).

>>> tok = Tokenizer()
>>> [s.texts() for s in tok.sentences("Mr. Smith didn't go. He stayed home!")]
[['Mr.', 'Smith', 'did', "n't", 'go', '.'], ['He', 'stayed', 'home', '!']]

Rules (version 1, ``scheme`` ``ptb-regex``):

* Tokens: URLs and e-mail addresses; known abbreviations (``Mr.``, ``etc.``, ``U.S.``) and single capital initials
  keep their period; numbers keep inner ``.,:/-`` (``3.14``, ``1,000``, ``12:30``); words keep inner hyphens and
  apostrophes, then PTB contractions are split off (``didn't`` -> ``did n't``, ``it's`` -> ``it 's``); ``...``,
  ``--`` and runs of ``!``/``?`` are one token; each CJK ideograph or kana is a token of its own; a run of emoji
  (with joiners and modifiers) is one token; any other non-space character is a token by itself.
* Sentences end after ``.``, ``!``, ``?``, ``...`` or runs of them (plus any closing quotes or brackets) when the
  next token does not start with a lower-case letter, after ``。！？`` always, and at every line break run that
  holds a blank line (a paragraph break).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

SCHEME = "ptb-regex"
VERSION = 1

# Abbreviations that keep their period (lower-cased, without the period).
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt ft gen gov col capt lt sgt rev hon pres sen rep messrs mme mlle "
    "jan feb mar apr jun jul aug sep sept oct nov dec "
    "etc vs viz cf al approx dept est fig inc ltd co corp no nos vol vols pp ch sec art".split()
)

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_EMOJI = "\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff"
_EMOJI_JOIN = "\u200d\ufe0f\U0001f3fb-\U0001f3ff"
_TOKEN_RE = re.compile(
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
    + r"""])\w)+(?:['’-](?:(?!["""
    + _CJK
    + r"""])\w)+)*(?:\.(?!\.))?)
  | (?P<ellipsis>\.{2,}|…)
  | (?P<dash>-{2,}|—|–)
  | (?P<bang>[!?]+)
  | (?P<other>[^\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff])
    """,
    re.VERBOSE,
)
_CONTRACTION_RE = re.compile(r"(?i)(?:n['’]t|['’](?:s|m|d|re|ve|ll))$")
_SENTENCE_END = frozenset({".", "!", "?", "...", "…", "。", "！", "？"})
_ALWAYS_END = frozenset({"。", "！", "？"})
_CLOSERS = frozenset({'"', "'", ")", "]", "}", "’", "”", "»", "」", "』"})
_PARAGRAPH_RE = re.compile(r"\n[ \t\r\f\v]*\n")


@dataclass(frozen=True)
class TokenizerConfig:
    """The settings stored in a model directory's ``tokenizer.json``."""

    scheme: str = SCHEME  # the only scheme so far; a model trained otherwise must name its own
    version: int = VERSION  # rule version, bumped whenever a rule above changes
    split_sentences: bool = True  # False: a whole document is one "sentence" (still windowed when long)
    split_contractions: bool = True  # PTB: didn't -> did n't
    lowercase: bool = False  # the published ELMo models are case-sensitive
    max_sentence_tokens: int = 256  # longest sentence seen in training; longer ones are embedded in windows
    window_overlap: int = 32  # tokens shared by consecutive windows of a long sentence
    notes: dict[str, str] = field(default_factory=dict)  # free text (e.g. where the training text came from)

    def __post_init__(self) -> None:
        if self.scheme != SCHEME:
            raise ValueError(f"unknown tokenizer scheme {self.scheme!r}; this code implements {SCHEME!r}")
        if self.version != VERSION:
            raise ValueError(f"tokenizer version {self.version} asked for; this code implements version {VERSION}")
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


@dataclass(frozen=True)
class Token:
    """One token: its text and its span ``[start, end)`` in code points of the document."""

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
        out: list[Token] = []
        for match in _TOKEN_RE.finditer(text):
            kind, value, start = match.lastgroup, match.group(), match.start()
            if kind == "word":
                out.extend(self._split_word(value, start))
            else:
                out.append(Token(value, start, match.end()))
        if self.config.lowercase:
            out = [Token(t.text.lower(), t.start, t.end) for t in out]
        return out

    def _split_word(self, value: str, start: int) -> list[Token]:
        """A ``word`` match -> word (+ contraction) (+ final period unless an abbreviation)."""
        parts: list[Token] = []
        period = value.endswith(".") and value[:-1].lower() not in ABBREVIATIONS and not _is_initial(value)
        if period:
            value = value[:-1]
        cut = _CONTRACTION_RE.search(value) if self.config.split_contractions else None
        if cut and cut.start() > 0:
            parts.append(Token(value[: cut.start()], start, start + cut.start()))
            parts.append(Token(value[cut.start() :], start + cut.start(), start + len(value)))
        else:
            parts.append(Token(value, start, start + len(value)))
        if period:
            parts.append(Token(".", start + len(value), start + len(value) + 1))
        return parts

    def sentences(self, text: str) -> list[Sentence]:
        """Splits ``text`` into sentences of tokens (empty list when there is no token)."""
        tokens = self.tokens(text)
        if not tokens:
            return []
        if not self.config.split_sentences:
            return [Sentence(tokens[0].start, tokens[-1].end, tuple(tokens))]
        breaks = {m.start() for m in _PARAGRAPH_RE.finditer(text)}
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
