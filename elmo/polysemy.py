"""A polysemy check: do the contextual layers separate the senses of ambiguous words?

For each word, sentences using it in one of two senses (written for this project, tokenized like the training
text). Each occurrence's vector is classified by its nearest neighbour (cosine) among the other occurrences of the
same word, leave-one-out; accuracy is averaged over words. Layer 0 (the char-CNN token vector) is the same for every
occurrence of a word, so it cannot beat chance (exact ties share the credit, which with 8 + 8 occurrences gives
7/15 = 0.47); contextual layers should. The word is spelled the same way (same case) in both senses, so
spelling gives nothing away.

``python -m elmo.polysemy --model DIR [--plot FILE.png]`` prints a table per layer and optionally draws a PCA
picture of the occurrences, layer 0 next to the top layer.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from elmo.api import Elmo

SENSES: dict[str, dict[str, list[str]]] = {
    "apple": {
        "fruit": [  # capitalised like the company sense, so the surface form reveals nothing
            "Apple trees grew in rows along the south side of the orchard .",
            "Apple pie with cinnamon and sugar was served after dinner .",
            "Apple blossoms covered the branches in the spring .",
            "Apple juice was pressed from the ripe fruit in the autumn .",
            "Apple seeds are small and brown and slightly bitter .",
            "Apple slices were given to the horse as a treat .",
            "Apple harvests were poor after the late frost killed the buds .",
            "Apple sauce is made by cooking the peeled fruit with water .",
        ],
        "company": [
            "Apple announced a new phone at its conference in California .",
            "Shares of Apple rose after the company reported record profits .",
            "Apple and Microsoft compete in the market for computers .",
            "The engineers at Apple designed a faster chip for the laptop .",
            "Apple sold millions of devices in the last quarter .",
            "Investors expect Apple to release new software next year .",
            "The lawsuit against Apple was settled by the technology firm .",
            "Apple opened a large store downtown for its customers .",
        ],
    },
    "bank": {
        "river": [
            "They sat on the bank of the river and watched the water .",
            "The boat drifted toward the muddy bank of the stream .",
            "Willows grew along the bank where the river turned .",
            "He climbed up the steep bank after swimming across .",
            "Flowers covered the grassy bank beside the brook .",
            "The flood washed away part of the bank near the bridge .",
            "Fishermen stood on the bank casting their lines into the lake .",
            "The children ran down the bank to the edge of the water .",
        ],
        "money": [
            "She deposited her wages at the bank on Friday .",
            "The bank raised its interest rates on loans .",
            "He borrowed money from the bank to buy a house .",
            "The central bank controls the supply of currency .",
            "Robbers broke into the bank and stole the cash .",
            "My account at the bank pays very little interest .",
            "The bank refused to lend the merchant any more money .",
            "Congress passed a law to regulate every national bank .",
        ],
    },
    "bat": {
        "animal": [
            "A bat flew out of the cave at dusk to hunt insects .",
            "The bat hung upside down from the roof of the barn .",
            "Each bat finds its food in the dark by listening to echoes .",
            "We saw a bat flutter past the lamp in the garden .",
            "The little bat folded its wings and went to sleep .",
            "A colony of bat species lives in the old mine .",
            "The bat caught a moth in the night air .",
            "Her cat brought a dead bat into the kitchen .",
        ],
        "sport": [
            "He swung the bat and hit the ball over the fence .",
            "The player gripped the wooden bat with both hands .",
            "She broke her bat on a fast pitch in the last inning .",
            "The cricket bat was made of willow and signed by the team .",
            "He picked up the bat and walked to the plate .",
            "The coach taught the boys how to hold a bat properly .",
            "A new aluminium bat hits the ball farther .",
            "The batter tapped his bat against his shoe before the pitch .",
        ],
    },
    "plant": {
        "factory": [
            "The car plant employs three thousand workers .",
            "They built a power plant on the edge of the city .",
            "The steel plant closed and the town lost its jobs .",
            "Workers at the chemical plant went on strike for higher wages .",
            "The company will open a new plant to make engines .",
            "Smoke rose from the chimneys of the old plant .",
            "The nuclear plant produces electricity for the region .",
            "Managers inspected the plant before production began .",
        ],
        "vegetation": [
            "She watered the plant on the windowsill every morning .",
            "The plant needs sunlight and good soil to grow .",
            "Bees carry pollen from one plant to another .",
            "The leaves of the plant turned yellow in the drought .",
            "This plant flowers in the spring with small white blossoms .",
            "He dug up the plant and moved it to a larger pot .",
            "Every green plant turns light into sugar .",
            "The goat ate the young plant down to its roots .",
        ],
    },
}


@dataclass
class Occurrence:
    """One use of an ambiguous word: its sense and its vector in every layer (L+1, W)."""

    word: str
    sense: str
    sentence: str
    layers: np.ndarray


def collect(model: Elmo, senses: dict[str, dict[str, list[str]]] = SENSES) -> list[Occurrence]:
    """Embeds every sentence and picks out the ambiguous word's vectors (matched case-insensitively)."""
    items = [(word, sense, s) for word, by_sense in senses.items() for sense, ss in by_sense.items() for s in ss]
    vectors = model.embed([s.split() for _, _, s in items], layers="all")
    found = []
    for (word, sense, sentence), layers in zip(items, vectors, strict=True):
        tokens = [t.lower() for t in sentence.split()]
        if word not in tokens:
            raise ValueError(f"{word!r} is not a token of {sentence!r}")
        found.append(Occurrence(word, sense, sentence, layers[:, tokens.index(word)]))
    return found


def nearest_neighbour_accuracy(occurrences: list[Occurrence], layer: int) -> dict[str, float]:
    """Leave-one-out 1-NN sense accuracy per word (cosine; exact ties count 1/2, i.e. chance)."""
    result = {}
    for word in sorted({o.word for o in occurrences}):
        group = [o for o in occurrences if o.word == word]
        x = np.stack([o.layers[layer] for o in group]).astype(np.float64)  # (N, W)
        x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        senses = np.array([o.sense for o in group])
        score = 0.0
        for i in range(len(group)):
            best = np.flatnonzero(np.isclose(sim[i], sim[i].max(), rtol=0, atol=1e-9))
            score += float(np.mean(senses[best] == senses[i])) if len(best) > 1 else float(senses[best[0]] == senses[i])
        result[word] = score / len(group)
    return result


def plot(occurrences: list[Occurrence], path: str, layers: tuple[int, int]) -> None:
    """PCA scatter of every occurrence, one row per word, one column per layer; colour = sense."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    words = sorted({o.word for o in occurrences})
    fig, axes = plt.subplots(len(words), len(layers), figsize=(4 * len(layers), 3 * len(words)), squeeze=False)
    for row, word in enumerate(words):
        group = [o for o in occurrences if o.word == word]
        for col, layer in enumerate(layers):
            x = np.stack([o.layers[layer] for o in group]).astype(np.float64)
            x -= x.mean(0)
            _, _, vt = np.linalg.svd(x, full_matrices=False)
            xy = x @ vt[:2].T if np.abs(x).max() > 1e-9 else np.zeros((len(group), 2))
            ax = axes[row, col]
            for sense, marker in zip(sorted({o.sense for o in group}), "o^", strict=False):
                pts = xy[[o.sense == sense for o in group]]
                ax.scatter(pts[:, 0], pts[:, 1], marker=marker, label=sense, alpha=0.7)
            ax.set_title(f"'{word}' — layer {layer}" + (" (context-free)" if layer == 0 else ""))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(argv: list[str] | None = None) -> None:
    """Prints the per-layer accuracy table; draws the picture with ``--plot``."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m elmo.polysemy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="model directory (options.json + weights.hdf5)")
    parser.add_argument("--plot", default="", help="write a PNG of the occurrences here")
    args = parser.parse_args(argv)
    model = Elmo.from_directory(args.model)
    occurrences = collect(model)
    words = sorted(SENSES)
    print("| layer | " + " | ".join(words) + " | mean |")
    print("| --- |" + " --- |" * (len(words) + 1))
    for layer in range(model.config.n_output_layers):
        acc = nearest_neighbour_accuracy(occurrences, layer)
        cells = " | ".join(f"{acc[w]:.2f}" for w in words)
        print(f"| {layer} | {cells} | {np.mean(list(acc.values())):.2f} |")
    if args.plot:
        plot(occurrences, args.plot, tuple(range(model.config.n_output_layers)))
        print(f"picture: {args.plot}")


if __name__ == "__main__":
    main()
