"""Contextual search over a run's embeddings: a LanceDB index kept in sync with nightly runs (``search.index``),
sentence search and sense-aware word-in-context search (``search.query``), and a 2-D map of a word's occurrences
(``search.plot``). See docs/search.md.

>>> from search import apply_run, SearchIndex
>>> apply_run("output/2026-11-02", "index/")            # build, or apply a nightly run's changes
>>> index = SearchIndex.open("index/")                   # loads the model the index records (and checks it)
>>> index.sentences("The river flooded the fields.", k=5)
>>> index.word("bank", "We sat on the bank of the river.", k=10)
"""

from __future__ import annotations

from elmo.malloc import pause_collector_while_command_imports
from search.errors import (
    EmptyQueryError,
    IndexModelError,
    RunNotFinishedError,
    SearchError,
    UnknownWordError,
)

pause_collector_while_command_imports()  # `python -m search.query` etc. only (elmo.malloc)

__all__ = [
    "EmptyQueryError",
    "IndexModelError",
    "RunNotFinishedError",
    "SearchError",
    "SearchIndex",
    "UnknownWordError",
    "apply_run",
]


def __getattr__(name: str):
    """``apply_run`` and ``SearchIndex`` load on first use (they import torch; ``search.store`` alone does not)."""
    if name == "apply_run":
        from search.index import apply_run

        return apply_run
    if name == "SearchIndex":
        from search.query import SearchIndex

        return SearchIndex
    raise AttributeError(f"module 'search' has no attribute {name!r}")
