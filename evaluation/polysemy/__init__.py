"""Polysemy evaluation: leave-one-out nearest-neighbour word-sense accuracy per layer
(``python -m evaluation.polysemy``).

The data (``senses.jsonl``) and its rules are described in this folder's README.md; the code is in ``evaluate``.
"""

from evaluation.polysemy.evaluate import (
    DATA,
    Example,
    WordResult,
    chance,
    evaluate,
    load_senses,
    markdown_table,
    nearest_neighbour_accuracy,
    problems,
    target_vectors,
)

__all__ = [
    "DATA",
    "Example",
    "WordResult",
    "chance",
    "evaluate",
    "load_senses",
    "markdown_table",
    "nearest_neighbour_accuracy",
    "problems",
    "target_vectors",
]
