"""Does a biLM tell word senses apart? Leave-one-out nearest-neighbour sense accuracy per word and per layer.

The data (``senses.jsonl`` next to this file, rules in its README.md): sentences written for this project, each
using an ambiguous word in one labelled sense, the word spelled identically (same case) in every sense. For each
word, each occurrence's vector (the word's token in its sentence) is given the sense of its nearest neighbour
(cosine) among the other occurrences of the same word; the accuracy is the share of occurrences whose neighbour has
their own sense. Nearest neighbours that tie (similarities within ``TIE_TOLERANCE`` of the best) share the credit:
the occurrence scores the share of them that have its sense.

Layer 0, the context-free token vector (what Word2Vec or GloVe give), is the same for every occurrence of a word, so
all neighbours tie and it scores exactly the chance level

    chance = sum over senses of n_s (n_s - 1) / (N (N - 1)),

the expected accuracy of a neighbour drawn at random (9/19 = 0.47 for 10 + 10 sentences, 9/29 = 0.31 for
10 + 10 + 10). Layers 1..L are the contextual LSTM layers; ``1-L`` is the average of their vectors, which is what a
downstream mix of the contextual layers sees.

``python -m evaluation.polysemy --model DIR [--words bank,mole] [--json FILE] [--plot FILE.png]`` prints a markdown
table (one row per word, then the mean), saves the numbers as JSON and draws a 2-D PCA picture of a few words, layer 0
next to the top layer, coloured by sense (matplotlib: the ``tools`` extra).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DATA = Path(__file__).with_name("senses.jsonl")
SOURCE_WRITTEN = "written for this project"
# Cosine similarities closer than this to the best one count as tied. The context-free layer gives every occurrence
# of a word the same vector up to float rounding (different batch shapes), far below this; distinct contextual
# vectors are never this close in practice.
TIE_TOLERANCE = 1e-6
# The data set's rules (README.md), checked by ``problems``
MIN_WORDS = 30
MIN_PER_SENSE = 10
MIN_TOKENS, MAX_TOKENS = 8, 25
# No word right before or after the target, other than these, may recur in this many sentences of one sense
NEIGHBOUR_REPEATS = 4
FUNCTION_WORDS = frozenset("the a an of , . and to in on".split())
DEFAULT_PLOT_WORDS = ("bank", "Apple", "pitch", "mole")


@dataclass(frozen=True)
class Example:
    """One sentence of the data set: ``word`` (exactly as it appears in ``tokens``) used in ``sense``."""

    id: str
    word: str
    sense: str
    text: str
    tokens: tuple[str, ...]
    source: str

    @property
    def position(self) -> int:
        """Index of the word's first occurrence in ``tokens``."""
        return self.tokens.index(self.word)


@dataclass
class WordResult:
    """One word's numbers: occurrences per sense, the chance level, accuracy per layer label (``0``, ``1``, ...,
    ``1-L``)."""

    word: str
    counts: dict[str, int]
    chance: float
    accuracy: dict[str, float] = field(default_factory=dict)


def load_senses(path: str | Path = DATA, words: Sequence[str] = ()) -> list[Example]:
    """The examples of a JSON-lines file (all of them, or only those of ``words``), in file order."""
    examples = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        try:
            example = Example(
                row["id"], row["word"], row["sense"], row["text"], tuple(row["tokens"]), row.get("source", "")
            )
        except KeyError as missing:
            raise ValueError(f"{path}:{number}: no {missing} field") from None
        if not words or example.word in words:
            examples.append(example)
    unknown = set(words) - {e.word for e in examples}
    if unknown:
        raise ValueError(f"no sentences for {sorted(unknown)} in {path}")
    return examples


def _normalised(text: str) -> str:
    """Lower-case words and numbers only: two sentences differing only in punctuation or spacing are the same."""
    return " ".join(re.findall(r"[^\W_]+", text.lower()))


def problems(
    examples: Sequence[Example],
    min_words: int = MIN_WORDS,
    min_per_sense: int = MIN_PER_SENSE,
    token_range: tuple[int, int] = (MIN_TOKENS, MAX_TOKENS),
) -> list[str]:
    """Every way ``examples`` break the data set's rules (README.md), as readable lines; [] when none.

    Checked: unique ids; a source for each sentence; ``tokens`` are ``elmo.tokenize``'s tokens of ``text`` (the
    training tokenization) and one sentence; ``token_range`` tokens; the word occurs exactly once as a token, and not
    in another case either; every word has at least two senses of at least ``min_per_sense`` sentences; at least
    ``min_words`` words, no two of which differ only in case; no sentence twice (ignoring case and punctuation); no
    neighbour of the word (outside ``FUNCTION_WORDS``) in ``NEIGHBOUR_REPEATS`` or more sentences of one sense.
    """
    from elmo.tokenize import Tokenizer

    tokenizer = Tokenizer()
    found = []
    for key, n in Counter(e.id for e in examples).items():
        if n > 1:
            found.append(f"id {key} appears {n} times")
    seen: dict[str, str] = {}
    for e in examples:
        if not e.source.strip():
            found.append(f"{e.id}: no source")
        if [t.text for t in tokenizer.tokens(e.text)] != list(e.tokens):
            found.append(f"{e.id}: tokens are not elmo.tokenize's tokens of the text")
        if len(tokenizer.sentences(e.text)) != 1:
            found.append(f"{e.id}: not one sentence")
        if not token_range[0] <= len(e.tokens) <= token_range[1]:
            found.append(f"{e.id}: {len(e.tokens)} tokens, not {token_range[0]}-{token_range[1]}")
        if e.tokens.count(e.word) != 1:
            found.append(f"{e.id}: {e.word!r} occurs {e.tokens.count(e.word)} times as a token, not once")
        elif sum(t.lower() == e.word.lower() for t in e.tokens) != 1:
            found.append(f"{e.id}: {e.word!r} occurs again in another case")
        key = _normalised(e.text)
        if key in seen:
            found.append(f"{e.id}: same sentence as {seen[key]}")
        seen.setdefault(key, e.id)
    by_word: dict[str, Counter] = {}
    neighbours: Counter = Counter()
    for e in examples:
        by_word.setdefault(e.word, Counter())[e.sense] += 1
        if e.word in e.tokens:
            i = e.position
            for side, j in (("before", i - 1), ("after", i + 1)):
                if 0 <= j < len(e.tokens) and e.tokens[j].lower() not in FUNCTION_WORDS:
                    neighbours[e.word, e.sense, side, e.tokens[j].lower()] += 1
    for (word, sense, side, token), n in sorted(neighbours.items()):
        if n >= NEIGHBOUR_REPEATS:
            found.append(f"{word}/{sense}: {token!r} right {side} the word in {n} sentences")
    for word, counts in sorted(by_word.items()):
        if len(counts) < 2:
            found.append(f"{word}: only one sense")
        for sense, n in sorted(counts.items()):
            if n < min_per_sense:
                found.append(f"{word}/{sense}: {n} sentences, fewer than {min_per_sense}")
    if len(by_word) < min_words:
        found.append(f"{len(by_word)} words, fewer than {min_words}")
    for lower, n in Counter(w.lower() for w in by_word).items():
        if n > 1:
            found.append(f"{lower}: spelled in {n} different cases across senses")
    return found


def target_vectors(model, examples: Sequence[Example], batch_size: int = 64) -> np.ndarray:
    """Embeds every sentence once (``model``: an ``elmo.Elmo``) -> (N, L+1, W): each example's word vector in every
    layer."""
    layers = model.embed([list(e.tokens) for e in examples], layers="all", batch_size=batch_size)
    return np.stack([sentence[:, e.position] for e, sentence in zip(examples, layers, strict=True)])


def occurrence_scores(vectors: np.ndarray, senses: Sequence[str], tolerance: float = TIE_TOLERANCE) -> np.ndarray:
    """Leave-one-out 1-NN credit of each of N occurrences (vectors (N, W), cosine): 1 when the nearest other
    occurrence has the same sense, 0 when not; tied nearest neighbours share the credit."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    tied = sim >= sim.max(axis=1, keepdims=True) - tolerance  # (N, N): the nearest neighbours of each row
    labels = np.asarray(senses)
    same = labels[:, None] == labels[None, :]
    return (tied & same).sum(axis=1) / tied.sum(axis=1)


def nearest_neighbour_accuracy(vectors: np.ndarray, senses: Sequence[str], tolerance: float = TIE_TOLERANCE) -> float:
    """Leave-one-out 1-NN sense accuracy of one word's occurrences (see ``occurrence_scores``)."""
    return float(occurrence_scores(vectors, senses, tolerance).mean())


def chance(senses: Sequence[str]) -> float:
    """The accuracy of a neighbour drawn at random among the other occurrences, which is also what identical vectors
    score with tie sharing: sum n_s (n_s - 1) / (N (N - 1))."""
    counts = np.array(list(Counter(senses).values()), dtype=np.float64)
    total = counts.sum()
    return float((counts * (counts - 1)).sum() / (total * (total - 1)))


def layer_views(vectors: np.ndarray) -> dict[str, np.ndarray]:
    """(N, L+1, W) -> label -> (N, W): each layer (``"0"``, ``"1"``, ...) and, with 2+ contextual layers, their
    average (``"1-L"``)."""
    n_layers = vectors.shape[1]
    views = {str(k): vectors[:, k] for k in range(n_layers)}
    if n_layers > 2:
        views[f"1-{n_layers - 1}"] = vectors[:, 1:].mean(axis=1)
    return views


def evaluate(vectors: np.ndarray, examples: Sequence[Example]) -> list[WordResult]:
    """Per word (in first-appearance order): counts per sense, chance and accuracy for every ``layer_views`` label."""
    views = layer_views(vectors)
    results = []
    for word in dict.fromkeys(e.word for e in examples):
        rows = [i for i, e in enumerate(examples) if e.word == word]
        senses = [examples[i].sense for i in rows]
        result = WordResult(word, dict(Counter(senses)), chance(senses))
        for label, view in views.items():
            result.accuracy[label] = nearest_neighbour_accuracy(view[rows], senses)
        results.append(result)
    return results


def means(results: Sequence[WordResult]) -> dict[str, float]:
    """Unweighted mean over words of the chance level (``"chance"``) and of each layer's accuracy."""
    out = {"chance": float(np.mean([r.chance for r in results]))}
    for label in results[0].accuracy:
        out[label] = float(np.mean([r.accuracy[label] for r in results]))
    return out


def _label(label: str) -> str:
    return f"layers {label}" if "-" in label else f"layer {label}"


def markdown_table(results: Sequence[WordResult]) -> str:
    """One row per word (senses, sentences per sense, chance, accuracy per layer), then the mean over words."""
    labels = list(results[0].accuracy)
    head = ["word", "senses", "n", "chance", *(_label(lb) for lb in labels)]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in results:
        cells = [r.word, "/".join(r.counts), "/".join(str(n) for n in r.counts.values()), f"{r.chance:.2f}"]
        lines.append("| " + " | ".join(cells + [f"{r.accuracy[lb]:.2f}" for lb in labels]) + " |")
    mean = means(results)
    cells = [f"**mean ({len(results)} words)**", "", str(sum(sum(r.counts.values()) for r in results))]
    cells += [f"**{mean['chance']:.2f}**", *(f"**{mean[lb]:.2f}**" for lb in labels)]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_json(results: Sequence[WordResult], **about) -> dict:
    """The numbers as a JSON-ready dict: ``about`` (model, data, ...), per word and the means."""
    words = {r.word: {"senses": r.counts, "chance": r.chance, "accuracy": r.accuracy} for r in results}
    return {**about, "layers": list(results[0].accuracy), "words": words, "mean": means(results)}


def _pca_2d(x: np.ndarray) -> np.ndarray:
    """(N, W) -> (N, 2) on the first two principal components; all zeros when the points coincide."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x, axis=0, dtype=np.float64)
    if np.abs(x).max() < 1e-6:
        return np.zeros((len(x), 2))
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    return np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))


def plot(vectors: np.ndarray, examples: Sequence[Example], words: Sequence[str], path: str | Path) -> None:
    """A PNG: one row per word, columns layer 0 and the top layer; each occurrence a point (PCA of that word's
    vectors in that layer), colour and marker by sense, the panel titled with its accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = vectors.shape[1] - 1
    fig, axes = plt.subplots(len(words), 2, figsize=(8, 3 * len(words)), squeeze=False)
    for row, word in enumerate(words):
        rows = [i for i, e in enumerate(examples) if e.word == word]
        if not rows:
            raise ValueError(f"no sentences for {word!r} to plot")
        senses = [examples[i].sense for i in rows]
        for col, layer in enumerate((0, top)):
            x = vectors[rows, layer]
            xy = _pca_2d(x)
            ax = axes[row, col]
            for sense, marker in zip(dict.fromkeys(senses), "o^sDv", strict=False):
                pts = xy[[s == sense for s in senses]]
                ax.scatter(pts[:, 0], pts[:, 1], marker=marker, label=sense, alpha=0.7)
            accuracy = nearest_neighbour_accuracy(x, senses)
            kind = "context-free" if layer == 0 else "top"
            ax.set_title(f"'{word}': layer {layer} ({kind}), 1-NN {accuracy:.2f}", fontsize=9)
            if not xy.any():
                ax.text(0.5, 0.1, f"all {len(rows)} occurrences at one point", ha="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[WordResult]:
    """Prints the table; ``--json`` saves the numbers, ``--plot`` draws the picture."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m evaluation.polysemy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="model directory (options.json + weights.hdf5)")
    parser.add_argument("--data", default=str(DATA), help="sense-labelled sentences, JSON lines (default: %(default)s)")
    parser.add_argument("--words", default="", help="comma-separated words to evaluate (default: all)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per forward pass")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", default="", help="write the numbers here")
    parser.add_argument("--plot", default="", help="write a PNG of a few words' occurrences here")
    parser.add_argument(
        "--plot-words", default=",".join(DEFAULT_PLOT_WORDS), help="comma-separated words to plot (%(default)s)"
    )
    args = parser.parse_args(argv)
    from elmo.api import Elmo

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    examples = load_senses(args.data, [w for w in args.words.split(",") if w])
    model = Elmo.from_directory(args.model)
    vectors = target_vectors(model, examples, args.batch_size)
    results = evaluate(vectors, examples)
    print(markdown_table(results))
    if args.json:
        data = "evaluation/polysemy/senses.jsonl" if Path(args.data).resolve() == DATA.resolve() else args.data
        about = {"model": args.model, "fingerprint": model.fingerprint, "data": data, "sentences": len(examples)}
        Path(args.json).write_text(json.dumps(to_json(results, **about), indent=1) + "\n", encoding="utf-8")
    if args.plot:
        present = list(dict.fromkeys(e.word for e in examples))
        chosen = [w for w in args.plot_words.split(",") if w in present] or present[:4]
        plot(vectors, examples, chosen, args.plot)
        print(f"picture: {args.plot}")
    return results


if __name__ == "__main__":
    main()
