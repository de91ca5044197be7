"""Sentence splitting, tokenization and windowing of documents, by the model's own ``tokenizer.json``."""

from __future__ import annotations

import apache_beam as beam
import numpy as np

from elmo.tokenize import Tokenizer, TokenizerConfig
from elmo.windows import plan_windows
from transforms.metrics import counter
from transforms.records import (
    Document,
    DocumentError,
    SentenceWindow,
    TokenizedDocument,
    error_record,
    exception_reason,
)


def tokenize_document(doc: Document, tokenizer: Tokenizer, max_tokens: int, overlap: int) -> TokenizedDocument:
    """Document -> TokenizedDocument (raises DocumentError when it has no token)."""
    sentences = tokenizer.sentences(doc.text)
    if not sentences:
        raise DocumentError("no tokens (only whitespace or control characters)")
    tokens: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    bounds = []
    windows = []
    for sentence in sentences:
        first = len(tokens)
        for token in sentence.tokens:
            tokens.append(token.text)
            starts.append(token.start)
            ends.append(token.end)
        bounds.append((first, len(tokens)))
        windows.append(tuple(plan_windows(len(sentence.tokens), max_tokens, overlap)))
    return TokenizedDocument(
        doc=doc,
        tokens=tuple(tokens),
        starts=np.asarray(starts, dtype=np.int32),
        ends=np.asarray(ends, dtype=np.int32),
        sentence_tokens=tuple(bounds),
        windows=tuple(windows),
    )


def document_windows(tokenized: TokenizedDocument) -> list[SentenceWindow]:
    """All inference units of a document, in (sentence, window) order."""
    out = []
    for s, ((first, _), spans) in enumerate(zip(tokenized.sentence_tokens, tokenized.windows, strict=True)):
        for w, (start, end) in enumerate(spans):
            tokens = tokenized.tokens[first + start : first + end]
            out.append(SentenceWindow(tokenized.doc.doc_id, s, w, tokens, len(spans)))
    return out


class _TokenizeFn(beam.DoFn):
    """Document -> TokenizedDocument (the tokenizer is built once per DoFn instance, in ``setup``)."""

    def __init__(self, tokenizer_json: str, max_tokens: int, overlap: int):
        self._tokenizer_json = tokenizer_json
        self._max_tokens = max_tokens
        self._overlap = overlap
        self._tokenizer: Tokenizer | None = None
        self._sentences = counter("sentences")
        self._tokens = counter("tokens")
        self._windows = counter("windows")
        self._windowed = counter("sentences_windowed")

    def setup(self):
        self._tokenizer = Tokenizer.from_json(self._tokenizer_json)

    def process(self, doc: Document):
        tokenized = tokenize_document(doc, self._tokenizer, self._max_tokens, self._overlap)
        self._sentences.inc(len(tokenized.sentence_tokens))
        self._tokens.inc(len(tokenized.tokens))
        self._windows.inc(tokenized.n_windows)
        self._windowed.inc(sum(len(w) > 1 for w in tokenized.windows))
        yield tokenized


def tokenize_error(bad: tuple[Document, tuple]) -> dict:
    """A dead-lettered Document -> its error record."""
    doc, exc_info = bad
    return error_record("tokenize", exception_reason(exc_info), doc.doc_id, doc.source, doc.line, doc.text)


class TokenizeDocuments(beam.PTransform):
    """PCollection[Document] -> (PCollection[TokenizedDocument], PCollection[dict error record]).

    Splits sentences and tokens as ``tokenizer_json`` says, and plans each sentence's windows: sentences longer
    than ``max_tokens`` (default: the tokenizer's ``max_sentence_tokens``) become windows overlapping by
    ``overlap`` tokens. Documents without any token are dead-lettered.
    """

    def __init__(self, tokenizer_json: str, max_tokens: int | None = None, overlap: int | None = None):
        super().__init__()
        config = TokenizerConfig.from_json(tokenizer_json)  # validate at construction time, on the launcher
        self._tokenizer_json = tokenizer_json
        self._max_tokens = max_tokens or config.max_sentence_tokens
        self._overlap = config.window_overlap if overlap is None else overlap
        plan_windows(0, self._max_tokens, self._overlap)  # raises on bad settings

    def expand(self, documents):
        tokenized, bad = (
            documents
            | "Tokenize"
            >> beam.ParDo(_TokenizeFn(self._tokenizer_json, self._max_tokens, self._overlap)).with_exception_handling()
        )
        return tokenized, bad | "TokenizeErrors" >> beam.Map(tokenize_error)


class WindowsOf(beam.PTransform):
    """PCollection[TokenizedDocument] -> PCollection[SentenceWindow]: every inference unit of every document."""

    def expand(self, tokenized):
        return tokenized | "Windows" >> beam.FlatMap(document_windows)
