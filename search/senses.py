"""Word in context: ranking a word's occurrences by how close their contextual vector is to the query's, and the
precision@k of that ranking on a sense-labelled set.

Ranking is by cosine similarity after centring on the word's mean vector (the mean over all its occurrences in
the index): every occurrence of a word shares a large component (its spelling: layer 0 is identical for all of
them, and the layer mixes carry it) that makes all cosines high and close together; what is left after removing
the mean is what the context added, where the senses differ. ``centre=False`` ranks by the plain cosine.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from typing import Any

import numpy as np

from elmo.cli import add_debug_flag, run_cli
from elmo.retries import configure_client_retries

MIN_CENTRE = 3  # fewer occurrences than this: plain cosine (the mean would be the occurrences themselves)


def cosine_ranking(vectors: np.ndarray, query: np.ndarray, centre: bool = True) -> np.ndarray:
    """Cosine similarity of each row of ``vectors`` (N, W) to ``query`` (W,), after subtracting the rows' mean
    when ``centre`` (and N >= ``MIN_CENTRE``): (N,) float64."""
    x = vectors.astype(np.float64)
    q = query.astype(np.float64)
    if centre and len(x) >= MIN_CENTRE:
        mean = x.mean(axis=0)
        x = x - mean
        q = q - mean
    norms = np.linalg.norm(x, axis=1) * max(np.linalg.norm(q), 1e-12)
    return (x @ q) / np.maximum(norms, 1e-12)


def precision_at_k(index: Any, labelled: list[dict[str, str]], k: int = 5, centre: bool = True) -> dict[str, dict]:
    """Per word: the mean precision@k of same-sense occurrences when each labelled sentence is the query (its own
    occurrence left out), and the mean share of the query's sense among the other occurrences (what a random
    ranking scores). ``labelled``: dicts with ``id`` (document id), ``text``, ``word`` and ``sense``; the index
    must hold these documents (sentence id ``<id>#0``)."""
    sense_of = {f"{row['id']}#0": row["sense"] for row in labelled}
    by_word: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in labelled:
        by_word[row["word"]].append(row)
    result = {}
    for word, rows in sorted(by_word.items()):
        occurrences = index.occurrences(word)
        ids = occurrences["sentence_id"]
        vectors = occurrences["vectors"]
        senses = [sense_of.get(i) for i in ids]
        precisions, shares = [], []
        for row in rows:
            query, _ = index.embedder.word_vector(word, row["text"])
            scores = cosine_ranking(vectors, query, centre)
            own = f"{row['id']}#0"
            order = [j for j in np.argsort(-scores, kind="stable") if ids[j] != own][:k]
            precisions.append(np.mean([senses[j] == row["sense"] for j in order]))
            others = [s for i, s in zip(ids, senses, strict=True) if i != own]
            shares.append(np.mean([s == row["sense"] for s in others]))
        result[word] = {
            "precision": float(np.mean(precisions)),
            "share": float(np.mean(shares)),
            "queries": len(rows),
            "occurrences": len(ids),
        }
    return result


def main(argv: list[str]) -> int:
    """``python -m search.senses INDEX LABELLED.jsonl``: precision@k per word, as a Markdown table or JSON."""
    configure_client_retries()  # before any storage client exists
    from search.query import SearchIndex

    parser = argparse.ArgumentParser(prog="python -m search.senses", allow_abbrev=False, description=__doc__)
    parser.add_argument("index")
    parser.add_argument("labelled", help="JSON lines with id, text, word, sense (the documents of the indexed run)")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--raw", action="store_true", help="plain cosine, without centring on the word's mean")
    parser.add_argument("--model", default=None, help="model directory (default: the one the index records)")
    parser.add_argument("--json", action="store_true")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    with open(args.labelled, encoding="utf-8") as f:
        labelled = [json.loads(line) for line in f if line.strip()]
    index = SearchIndex.open(args.index, model_dir=args.model)
    result = precision_at_k(index, labelled, args.k, centre=not args.raw)
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    print(f"| word | precision@{args.k} | share of the sense | queries |")
    print("| --- | --- | --- | --- |")
    for word, r in result.items():
        print(f"| {word} | {r['precision']:.2f} | {r['share']:.2f} | {r['queries']} |")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="python -m search.senses"))
