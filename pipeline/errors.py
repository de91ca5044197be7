"""The launcher's error types: what counts as a usage or configuration error (one line, exit 2)."""

from __future__ import annotations


class UsageError(ValueError):
    """A flag, value or path that the launcher refuses before anything runs; the message names the culprit."""
