"""``python -m evaluation.initial_state``: how much the fixed initial states (zeros, canonical ``warm``) change
vectors, against the original tools' warmed-up stateful run. The README's table of initial states is its output.
"""

from __future__ import annotations

import argparse

import numpy as np

from elmo.api import Elmo

PROG = "python -m evaluation.initial_state"


def initial_state_drift(model: Elmo, sentences: list[list[str]], context: list[list[str]]) -> dict[str, float]:
    """How far the zero and canonical states are from a warmed-up stateful run, for each sentence.

    The reference embeds each sentence after running ``context`` through the same batch row statefully (what the
    original tools do once warmed up). Returns ``zeros_max``, ``zeros_mean``, ``warm_max`` and ``warm_mean``: max
    and mean |diff| over all layers and tokens of ``sentences``.
    """
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
    """``python -m evaluation.initial_state --options O --weights W --sentences FILE [--context N]``: the table."""
    parser = argparse.ArgumentParser(
        prog=PROG,
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
