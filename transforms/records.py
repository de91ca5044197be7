"""The element types that flow between the stages, and the error record every failure becomes.

Plain frozen dataclasses: Beam pickles them (the classes live in this installed package, so worker processes can
unpickle them). Keys used for grouping are always ``str`` document ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

EXCERPT_CHARS = 200  # how much of a failed document's text goes into its error record


class DocumentError(ValueError):
    """A document that cannot be embedded; its message becomes the ``reason`` of the error record."""


@dataclass(frozen=True)
class RawLine:
    """One line of an input shard, undecoded. ``data`` is None when the line was longer than the read limit."""

    source: str  # shard path relative to the glob root
    line: int  # 1-based line number in the (decompressed) shard
    data: bytes | None
    n_bytes: int  # the line's full length in bytes, without the line break
    json_lines: bool  # whether the shard is JSON lines (else plain text, one document per line)


@dataclass(frozen=True)
class Document:
    """A document to embed."""

    doc_id: str  # its own id (JSON lines), else "<source>:<line>"
    text: str
    source: str
    line: int


@dataclass(frozen=True)
class TokenizedDocument:
    """A document cut into sentences and tokens, with the windows each sentence is embedded in.

    ``tokens``/``starts``/``ends`` list every token of the document (offsets in code points of ``text``);
    sentence ``s`` holds tokens ``sentence_tokens[s] = (first, last + 1)``; ``windows[s]`` are its token spans,
    relative to the sentence (one span unless the sentence is longer than the window size).
    """

    doc: Document
    tokens: tuple[str, ...]
    starts: np.ndarray  # (N,) int32
    ends: np.ndarray  # (N,) int32
    sentence_tokens: tuple[tuple[int, int], ...]
    windows: tuple[tuple[tuple[int, int], ...], ...]

    @property
    def n_windows(self) -> int:
        """How many windows the whole document is embedded in."""
        return sum(len(w) for w in self.windows)


@dataclass(frozen=True)
class SentenceWindow:
    """One unit of inference: a sentence, or one window of a long sentence."""

    doc_id: str
    sentence_index: int
    window_index: int
    tokens: tuple[str, ...]
    sentence_windows: int  # how many windows its sentence has (1: the window is the whole sentence)

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class WindowVectors:
    """The model's output for one window, already reduced to the chosen layers.

    ``vectors``: (L+1, T, 2P) float32 for layers=all, else (T, 2P) float32.
    """

    doc_id: str
    sentence_index: int
    window_index: int
    vectors: np.ndarray
    sentence_windows: int  # as in its SentenceWindow


@dataclass(frozen=True)
class DocumentStats:
    """What one embedded document contributed (summed into the manifest)."""

    doc_id: str
    sentences: int
    tokens: int
    windows: int  # windows embedded by this run
    carried: int = 0  # sentences whose vectors came from a previous run


def error_record(
    stage: str, reason: str, doc_id: str | None = None, source: str = "", line: int = 0, excerpt: str = ""
) -> dict[str, Any]:
    """The JSON object written to ``errors/`` for one failed document (schema in docs/pipeline.md)."""
    return {
        "id": doc_id,
        "source": source,
        "line": line,
        "stage": stage,
        "reason": reason,
        "excerpt": excerpt[:EXCERPT_CHARS].encode("utf-8", "replace").decode("utf-8"),  # no lone surrogates
    }


def exception_reason(exc_info: tuple[Any, str, list[str]]) -> str:
    """Beam's dead-letter ``(type, repr, traceback lines)`` -> a one-line reason.

    A ``DocumentError`` gives its message; any other exception its type name and message.
    """
    exc_type, exc_repr, tb = exc_info
    last = tb[-1].strip() if tb else exc_repr
    message = last.split(": ", 1)[1] if ": " in last else last
    if isinstance(exc_type, type) and issubclass(exc_type, DocumentError):
        return message
    name = exc_type.__name__ if isinstance(exc_type, type) else str(exc_type)
    return f"{name}: {message}"
