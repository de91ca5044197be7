"""The canonical initial LSTM state: one fixed state computed from a fixed warm-up text.

The published biLMs were trained on sentences packed back to back with the state carried over, so at inference
they are always "between two sentences": the original tools run statefully and advise warming the state up on a
few batches. The canonical state is that warmed-up state made deterministic: the final state (forward after
``</S>``, backward after ``<S>``) of running ``WARMUP_TEXT`` one sentence at a time, statefully, from zeros.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from elmo.model import BiLmState

if TYPE_CHECKING:
    from elmo.api import Elmo

# Plain, varied English; whitespace-tokenized like the models' training text.
WARMUP_TEXT = [
    "The committee met on Tuesday to discuss the new budget .",
    "She said that the results were better than expected , but more work is needed .",
    "In 1998 , the company moved its headquarters to a larger building near the river .",
    '" I do n\'t know , " he replied , looking out of the window .',
    "Scientists have found that the disease spreads more slowly in cold weather .",
    "The book tells the story of a family that lived on a small farm for three generations .",
    "Prices rose by 4 percent last year , the highest increase since 2008 .",
    "After the game , the players thanked the fans who had travelled to watch them .",
]


def canonical_state(model: Elmo, warmup: list[str] | None = None) -> BiLmState:
    """Runs the warm-up sentences one at a time, statefully, from zeros; returns the final state (2, L, 1, ·)."""
    saved = model._stateful_state
    model.reset_state()
    try:
        for sentence in warmup or WARMUP_TEXT:
            model.embed_batch_tensor([sentence.split()], stateful=True)
        state = model._stateful_state
    finally:
        model._stateful_state = saved
    assert state is not None
    return BiLmState(state.h.clone(), state.c.clone())


def initial_state_drift(model: Elmo, sentences: list[list[str]], context: list[list[str]]) -> dict[str, float]:
    """How far the zero and canonical states are from a warmed-up stateful run, for each sentence.

    The reference embeds each sentence after running ``context`` through the same batch row statefully (what the
    original tools do once warmed up). Returns max and mean |diff| over all layers for both fixed states.
    """
    from elmo.api import Elmo

    zeros = Elmo(model.bilm, initial_state="zeros", device=model.device)
    warm = Elmo(model.bilm, initial_state="warm", device=model.device)
    diffs: dict[str, list[np.ndarray]] = {"zeros": [], "warm": []}
    for sentence in sentences:
        zeros.reset_state()
        for previous in context:
            zeros.embed([previous], stateful=True, batch_size=1)
        reference = zeros.embed([sentence], stateful=True, batch_size=1)[0]
        for name, candidate in (("zeros", zeros), ("warm", warm)):
            diffs[name].append(np.abs(candidate.embed([sentence])[0] - reference).ravel())
    summary = {}
    for name, parts in diffs.items():
        flat = np.concatenate(parts)
        summary[f"{name}_max"] = float(flat.max())
        summary[f"{name}_mean"] = float(flat.mean())
    return summary


def main(argv: list[str] | None = None) -> None:
    """``python -m elmo.state --options O --weights W --sentences FILE``: prints the drift table."""
    import argparse

    from elmo.api import Elmo

    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        description="How much zero vs canonical initial state changes vectors, against a warmed-up stateful run.",
    )
    parser.add_argument("--options", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--sentences", required=True, help="one whitespace-tokenized sentence per line")
    parser.add_argument("--context", type=int, default=5, help="sentences run before each one to warm up")
    args = parser.parse_args(argv)
    with open(args.sentences, encoding="utf-8") as f:
        lines = [line.split() for line in f if line.strip()]
    context, sentences = lines[: args.context], lines[args.context :]
    model = Elmo.load(args.options, args.weights)
    drift = initial_state_drift(model, sentences, context)
    print(f"{len(sentences)} sentences, each after {len(context)} warm-up sentences in the same batch row")
    print("| initial state | max abs diff | mean abs diff |")
    print("| --- | --- | --- |")
    for name in ("zeros", "warm"):
        print(f"| {name} | {drift[f'{name}_max']:.4g} | {drift[f'{name}_mean']:.4g} |")


if __name__ == "__main__":
    main()
