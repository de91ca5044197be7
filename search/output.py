"""Search results as a readable table or as JSON lines."""

from __future__ import annotations

import json
import shutil
from typing import Any

MIN_TEXT = 30


def json_lines(results: list[dict[str, Any]]) -> str:
    """One JSON object per result, one per line."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)


def table(results: list[dict[str, Any]], columns: list[str], width: int | None = None) -> str:
    """A fixed-width text table of ``columns``; the last column (the text) is cut to fit ``width`` (the terminal's
    by default)."""
    if not results:
        return "(no results)\n"
    width = width or shutil.get_terminal_size((120, 24)).columns
    cells = [[cell(r.get(c)) for c in columns] for r in results]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns[:-1])]
    room = max(MIN_TEXT, width - sum(widths) - 2 * len(widths))
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(columns[:-1], widths, strict=True)), columns[-1]])]
    for row in cells:
        text = row[-1] if len(row[-1]) <= room else row[-1][: room - 1] + "…"
        lines.append("  ".join([*(v.ljust(w) for v, w in zip(row[:-1], widths, strict=True)), text]))
    return "\n".join(lines) + "\n"


def cell(value: Any) -> str:
    """A value as table text (floats with 3 decimals, newlines flattened)."""
    if isinstance(value, float):
        return f"{value:.3f}"
    return " ".join(str("" if value is None else value).split())
