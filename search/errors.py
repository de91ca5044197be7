"""The errors of the search package: each is a ``ConfigError`` (one line and exit status 2 on the command line)."""

from __future__ import annotations

from elmo.errors import ConfigError


class SearchError(ConfigError):
    """Anything about a run folder, an index or a query that the user can fix; the message says what."""


class RunNotFinishedError(SearchError):
    """The run folder has no ``_SUCCESS`` (unfinished, failed or still running) or is not a run folder."""


class IndexModelError(SearchError):
    """The index holds vectors of another model or other vector settings than the run or the query model."""


class UnknownWordError(SearchError):
    """The word does not occur in the index, or not in the example sentence."""


class EmptyQueryError(SearchError):
    """The query has no token."""
