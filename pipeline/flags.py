"""Exact flags: every argument must be a flag of this job or of Beam, spelled in full, or the launcher stops.

Beam only logs "Discarding unparseable args" for anything it does not know, so ``--tokens_vectors``,
``--dtpye float16`` or a stray word used to run the job without what was asked (and before Beam 2.66, which
turned argparse's prefix matching off, ``--dt float16`` was taken as ``--dtype``). ``check_flags`` parses the whole
command line once, with every registered ``PipelineOptions`` class and prefix matching off, before anything else
happens.
"""

from __future__ import annotations

import difflib

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

import pipeline.options  # noqa: F401  (defines EmbedOptions, registering the job's flags with Beam)
from elmo.errors import UsageError


class _ExactParser(_BeamArgumentParser):
    """Beam's parser without prefix matching, raising ``UsageError`` instead of printing usage and exiting."""

    def __init__(self) -> None:
        super().__init__(allow_abbrev=False, add_help=False)

    def error(self, message: str):
        raise UsageError(message)


def _parser() -> _ExactParser:
    parser = _ExactParser()
    classes = {str(cls): cls for cls in PipelineOptions.__subclasses__()}  # what Beam parses with (EmbedOptions too)
    for cls in classes.values():
        cls._add_argparse_args(parser)
    return parser


def known_flags() -> list[str]:
    """Every long flag this job accepts (its own and Beam's), sorted."""
    return sorted({s for action in _parser()._actions for s in action.option_strings if s.startswith("--")})


def check_flags(argv: list[str]) -> None:
    """Raises ``UsageError`` naming the first argument that is not a known flag spelled in full (with the closest
    known flags), a stray positional argument, or a flag with an invalid value."""
    parser = _parser()
    _, unknown = parser.parse_known_args(argv)
    if not unknown:
        return
    flags = known_flags()
    for arg in unknown:
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            raise UsageError(f"unknown flag {name}{_suggestion(name, flags)}")
    raise UsageError(f"unexpected argument {unknown[0]!r}: every argument is a --flag (values as --flag=value)")


def _suggestion(name: str, flags: list[str]) -> str:
    """`` (did you mean --x?)`` from prefixes and close spellings, or ``''``."""
    long_name = "--" + name.lstrip("-")
    prefixed = [f for f in flags if f.startswith(long_name)]
    close = difflib.get_close_matches(long_name, flags, n=3, cutoff=0.75)
    candidates = list(dict.fromkeys(close + prefixed))[:3]
    if not candidates:
        return "; see --help for the job's flags (every Apache Beam pipeline flag is accepted too)"
    return f" (did you mean {' or '.join(candidates)}?)"
