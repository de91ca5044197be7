"""A picture of a word's senses: its occurrences in the index mapped to 2-D, the contextual vectors next to
layer 0 (the context-free char-CNN vector), coloured by cluster of the contextual vectors.

    python -m search.plot INDEX WORD OUT.png [--clusters 2] [--max_points 2000] [--model DIR]

Both panels are PCA projections (numpy SVD). Clusters: k-means (cosine, k-means++ seeding, fixed seed) of the
contextual vectors centred on the word's mean; the same colours in both panels. Layer 0 is the same for every
occurrence of a spelling, so its panel shows one point per spelling: there is nothing there to separate senses.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from elmo.cli import add_debug_flag, run_cli
from elmo.retries import configure_client_retries

SEED = 0


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` projected on their first two principal components (zeros where there is no variance)."""
    x = x.astype(np.float64) - x.mean(axis=0)
    out = np.zeros((len(x), 2))
    if len(x) < 2 or np.abs(x).max() < 1e-9:
        return out
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    proj = x @ vt[:2].T
    out[:, : proj.shape[1]] = proj
    return out


def kmeans(x: np.ndarray, k: int, iterations: int = 50, seed: int = SEED) -> np.ndarray:
    """Spherical k-means of the rows of ``x`` (centred, then unit length): cluster labels (N,)."""
    x = x.astype(np.float64) - x.mean(axis=0)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    k = max(1, min(k, len(x)))
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):  # k-means++: far points are likelier seeds
        d = np.min([1 - x @ c for c in centres], axis=0).clip(min=0)
        p = d / d.sum() if d.sum() > 0 else np.full(len(x), 1 / len(x))
        centres.append(x[rng.choice(len(x), p=p)])
    c = np.stack(centres)
    labels = np.zeros(len(x), dtype=int)
    for step in range(iterations):
        labels_new = np.argmax(x @ c.T, axis=1)
        if step > 0 and np.array_equal(labels_new, labels):
            break
        labels = labels_new
        for j in range(k):
            members = x[labels == j]
            if len(members):
                mean = members.mean(axis=0)
                c[j] = mean / max(np.linalg.norm(mean), 1e-12)
    return labels


def plot_word(index: Any, word: str, path: str, clusters: int = 2, max_points: int = 2000) -> dict[str, Any]:
    """Writes the PNG map of ``word``'s occurrences in ``index`` (a ``SearchIndex``) to ``path``; returns the
    occurrence count, the number plotted and the cluster sizes. Needs matplotlib (the ``tools`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    occ = index.occurrences(word)
    n = len(occ["sentence_id"])
    keep = np.arange(n)
    if n > max_points:  # a fixed sample, so the same index draws the same picture
        keep = np.sort(np.random.default_rng(SEED).choice(n, max_points, replace=False))
    contextual = occ["vectors"][keep]
    tokens = [occ["token"][i] for i in keep]
    layer0 = index.embedder.layer0(tokens)
    labels = kmeans(contextual, clusters)
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    layers = index.state["model"]["vector_settings"]["layers"]
    panels = [(contextual, f"contextual ({layers})"), (layer0, "layer 0 (context-free)")]
    for ax, (vectors, title) in zip(axes, panels, strict=True):
        xy = pca_2d(vectors)
        for j in range(labels.max() + 1):
            pts = xy[labels == j]
            ax.scatter(pts[:, 0], pts[:, 1], s=18, alpha=0.7, color=colours(j % 10), label=f"cluster {j + 1}")
        distinct = len({tuple(np.round(v, 6)) for v in vectors})
        points = f"{distinct} distinct point" + ("s" if distinct != 1 else "")
        ax.set_title(f"'{word}': {title}\n{len(vectors)} occurrences, {points}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=8)
    fig.suptitle(f"{word!r} in {index.uri} (PCA; colours: k-means of the contextual vectors)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return {"occurrences": n, "plotted": len(keep), "clusters": np.bincount(labels).tolist()}


def main(argv: list[str]) -> int:
    """The ``python -m search.plot`` command."""
    configure_client_retries()  # before any storage client exists
    from search.query import SearchIndex

    parser = argparse.ArgumentParser(
        prog="python -m search.plot",
        allow_abbrev=False,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("index")
    parser.add_argument("word")
    parser.add_argument("png", help="output PNG file")
    parser.add_argument("--clusters", type=int, default=2, help="k-means clusters (default 2)")
    parser.add_argument("--max_points", type=int, default=2000, help="sample at most this many occurrences")
    parser.add_argument("--model", default=None, help="model directory (default: the one the index records)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    index = SearchIndex.open(args.index, model_dir=args.model)
    info = plot_word(index, args.word, args.png, clusters=args.clusters, max_points=args.max_points)
    print(f"{args.png}: {info['plotted']} of {info['occurrences']} occurrences, clusters {info['clusters']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="python -m search.plot"))
