"""The errors that mean "what you gave us is unusable" (as opposed to a bug): each message names the culprit.

``ConfigError`` and its subclasses are ``ValueError``s, so older ``except ValueError`` code keeps working. The
commands turn them into one line on stderr and exit status 2 (``elmo.cli.run_cli``); anything else is a bug and
keeps its traceback. Module-specific subclasses: ``elmo.config.OptionsError`` (options.json),
``elmo.weights.WeightsFormatError`` (weights.hdf5), ``elmo.embed.InputError`` (the text to embed) and
``elmo.training.train.CheckpointError`` (training checkpoints).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration, model file, argument or input is unusable; the message names the file, flag or value."""

    exit_code = 2


class UsageError(ConfigError):
    """A command-line flag is missing, malformed or contradicts another one (the message names the flag)."""


class ModelFilesError(ConfigError, FileNotFoundError):
    """A model directory, ``options.json`` or ``weights.hdf5`` does not exist (also a ``FileNotFoundError``)."""
