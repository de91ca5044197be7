"""Process-wide switches read from the environment: one reader, so a typo is warned about the same way everywhere."""

from __future__ import annotations

import os
import warnings


def env_choice(variable: str, choices: tuple[str, ...]) -> str:
    """The value of ``variable`` (case and surrounding spaces ignored) if it is one of ``choices``; the first choice
    (the default) when unset or empty, and, with a warning naming the valid values, when it is anything else."""
    default = choices[0]
    value = os.environ.get(variable, "").strip().lower() or default
    if value not in choices:
        warnings.warn(f"{variable}={value!r} is not one of {', '.join(choices)}: using {default}", stacklevel=2)
        return default
    return value
