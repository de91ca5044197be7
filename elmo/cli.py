"""Running a command's ``main``: configuration and usage errors become one line and an exit status, bugs keep
their traceback, ``--debug`` keeps every traceback.

>>> def main(argv: list[str]) -> int: ...
>>> sys.exit(run_cli(main, prog="python -m elmo.embed"))

Exit statuses: 0 success; 2 ``ConfigError`` (``UsageError``, ``OptionsError``, ``WeightsFormatError``,
``ModelFilesError``, ``InputError``, ``CheckpointError``), invalid JSON, argparse usage errors, and the extra
types a caller lists in ``expected``; 1 ``OSError`` (a file or store that cannot be read or written: one line
naming it); 130 interrupted (Ctrl-C). Any other exception is re-raised: a traceback, status 1.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence

from elmo.errors import ConfigError
from elmo.malloc import freeze_imported_objects

EXIT_USAGE = 2
EXIT_IO = 1
EXIT_INTERRUPTED = 130
DEBUG_FLAG = "--debug"


def add_debug_flag(parser) -> None:
    """Adds ``--debug`` (show tracebacks for every error) to an ``argparse.ArgumentParser``."""
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the full traceback of any error")


def exit_code_for(err: BaseException, expected: tuple[type[BaseException], ...] = ()) -> int | None:
    """The exit status for an error a user can fix (see the module doc), or None for a bug (show a traceback)."""
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(err, ConfigError):
        return err.exit_code
    if isinstance(err, (json.JSONDecodeError, *expected)):
        return EXIT_USAGE
    if isinstance(err, OSError):
        return EXIT_IO
    return None


def error_line(err: BaseException, prog: str) -> str:
    """``prog: error: message`` on one line (later lines of a long message are dropped after the second)."""
    if isinstance(err, KeyboardInterrupt):
        return f"{prog}: interrupted"
    text = str(err) or type(err).__name__
    if isinstance(err, OSError) and not isinstance(err, ConfigError) and err.filename and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    lines = [line for line in text.splitlines() if line.strip()]
    return f"{prog}: error: " + " / ".join(lines[:2])


def run_cli(
    main: Callable[[list[str]], int | None],
    argv: Sequence[str] | None = None,
    prog: str | None = None,
    expected: tuple[type[BaseException], ...] = (),
) -> int:
    """Calls ``main(argv)`` and returns its exit status (None counts as 0); never raises ``SystemExit``.

    User-fixable errors (``exit_code_for``) print ``prog: error: ...`` on stderr and return their status; with
    ``--debug`` in ``argv`` every error is re-raised with its traceback instead. ``argv`` defaults to
    ``sys.argv[1:]``; ``expected`` adds exception types the caller counts as usage errors (e.g. ``ValueError``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    prog = prog or os.path.basename(sys.argv[0])
    freeze_imported_objects()  # the command's imports are done: the collector skips them from here on
    try:
        status = main(args)
    except SystemExit as done:  # argparse: --help (0) or a usage error it already printed (2)
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException as err:  # classified: user errors become one line, bugs are re-raised
        code = exit_code_for(err, expected)
        if code is None or DEBUG_FLAG in args:
            raise
        print(error_line(err, prog), file=sys.stderr)
        return code
    return 0 if status is None else int(status)
