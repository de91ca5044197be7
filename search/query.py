"""Searching an index: sentences near a query sentence, and a word's occurrences in the sense of an example.

    python -m search.query sentence INDEX "query text" [-k 10] [--json] [--model DIR]
    python -m search.query word INDEX WORD "example sentence" [-k 10] [--raw] [--json] [--model DIR]

The query is embedded with the model the index records (``--model`` when that directory is not reachable from
here: it must be the same model, checked by fingerprint) and the index's tokenizer, initial state, windows and
layer choice. ``word`` matches whole tokens, ignoring case, and ranks every occurrence of the word by the cosine of
its contextual vector to the example's (centred on the word's mean; ``--raw``: plain cosine), so occurrences in
the example's sense come first. Results: a table, or JSON lines with ``--json``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from elmo import Elmo
from elmo.cli import add_debug_flag, run_cli
from elmo.retries import configure_client_retries
from search import output, store
from search.embedder import QueryEmbedder
from search.errors import EmptyQueryError, SearchError, UnknownWordError
from search.runs import vectors_of
from search.senses import cosine_ranking

MAX_CENTRED = 200_000  # occurrences of a word ranked exactly (centred) in memory; beyond: plain cosine in LanceDB


class SearchIndex:
    """An opened index and the query model it records."""

    def __init__(self, db: Any, state: dict[str, Any], embedder: QueryEmbedder, uri: str):
        self.db = db
        self.state = state
        self.embedder = embedder
        self.uri = uri
        self.sentence_table = store.open_table(db, store.SENTENCES)
        self.token_table = store.open_table(db, store.TOKENS)

    @classmethod
    def open(
        cls,
        uri: str,
        model_dir: str | None = None,
        model: Elmo | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> SearchIndex:
        """Opens the index at ``uri`` and loads its model (the directory it records, or ``model_dir``, or a loaded
        ``model``). Raises ``IndexModelError`` when that model is not the index's (fingerprint)."""
        db = store.connect(uri, storage_options)
        state = store.read_state(db)
        if state is None:
            raise SearchError(f"no index at {uri}: build one with python -m search.index RUN_DIR {uri}")
        return cls(db, state, QueryEmbedder(state["model"], model_dir=model_dir, model=model), uri)

    def nearest(self, vector: np.ndarray, k: int = 10, exact: bool = False) -> list[dict[str, Any]]:
        """The ``k`` sentences nearest to a sentence vector (cosine), best first."""
        found = store.vector_search(self.sentence_table, np.asarray(vector, np.float32), k, exact=exact)
        columns = ["id", "doc_id", "source", "line", "text"]
        return [
            {"rank": r + 1, "score": 1.0 - float(row["_distance"]), **{c: row[c] for c in columns}}
            for r, row in enumerate(found.select([*columns, "_distance"]).to_pylist())
        ]

    def sentences(self, text: str, k: int = 10) -> list[dict[str, Any]]:
        """The ``k`` indexed sentences nearest to ``text`` (embedded like the corpus), best first: rank, score
        (cosine similarity), id, doc_id, source, line, text. Raises ``EmptyQueryError`` for a query without a
        token."""
        check_k(k)
        return self.nearest(self.embedder.sentence_vector(text), k)

    def occurrences(self, word: str) -> dict[str, Any]:
        """Every occurrence of ``word`` (whole token, any case): sentence ids, positions, tokens, offsets and
        vectors (N, W). Raises ``UnknownWordError`` when the index has none."""
        table = self._tokens()
        target = check_word(word)
        where = f"word = {store.quote(target)}"
        n = table.count_rows(where)
        if n == 0:
            raise UnknownWordError(
                f"{word!r} does not occur in the index {self.uri} (words match whole tokens, ignoring case: "
                "'banks' is not 'bank')"
            )
        columns = ["sentence_id", "doc_id", "position", "token", "char_start", "char_end", "vector"]
        found = table.search().where(where).select(columns).limit(n).to_arrow()
        out: dict[str, Any] = {c: found.column(c).to_pylist() for c in columns if c != "vector"}
        out["vectors"] = vectors_of(found.column("vector"), found.num_rows)
        return out

    def word(self, word: str, example: str, k: int = 10, centre: bool = True) -> list[dict[str, Any]]:
        """The occurrences of ``word`` ranked by how close their contextual vector is to its vector in
        ``example`` (so the example's sense first): rank, score, sentence_id, doc_id, position, token, text (the
        sentence, the occurrence in [brackets]). Raises ``UnknownWordError`` for a word the index does not hold
        or the example does not contain, ``EmptyQueryError`` for an empty word or example."""
        check_k(k)
        target = check_word(word)
        table = self._tokens()
        count = table.count_rows(f"word = {store.quote(target)}")
        if count == 0:
            self.occurrences(target)  # raises UnknownWordError, before the example is embedded
        query, _ = self.embedder.word_vector(target, example)
        if count > MAX_CENTRED:  # too many to hold: the ANN-free filtered cosine search, not centred
            found = store.vector_search(table, query, k, where=f"word = {store.quote(target)}", exact=True)
            hits = [{**row, "score": 1.0 - float(row["_distance"])} for row in found.to_pylist()]
        else:
            occ = self.occurrences(target)
            scores = cosine_ranking(occ["vectors"], query, centre)
            order = np.argsort(-scores, kind="stable")[:k]
            keys = ["sentence_id", "doc_id", "position", "token", "char_start", "char_end"]
            hits = [{**{c: occ[c][j] for c in keys}, "score": float(scores[j])} for j in order]
        texts = self._sentence_rows({h["sentence_id"] for h in hits})
        results = []
        for rank, hit in enumerate(hits, 1):
            sentence = texts.get(hit["sentence_id"], {"text": "", "char_start": 0, "source": None})
            a, b = hit["char_start"] - sentence["char_start"], hit["char_end"] - sentence["char_start"]
            text = sentence["text"]
            results.append(
                {
                    "rank": rank,
                    "score": hit["score"],
                    "sentence_id": hit["sentence_id"],
                    "doc_id": hit["doc_id"],
                    "source": sentence["source"],
                    "position": hit["position"],
                    "token": hit["token"],
                    "text": f"{text[:a]}[{text[a:b]}]{text[b:]}" if 0 <= a < b <= len(text) else text,
                }
            )
        return results

    def _tokens(self) -> Any:
        if self.token_table is None:
            raise SearchError(
                f"the index {self.uri} has no token vectors: its run was made without --token_vectors, which "
                "word search needs"
            )
        return self.token_table

    def _sentence_rows(self, ids: set[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        where = f"id IN ({', '.join(store.quote(i) for i in sorted(ids))})"
        rows = self.sentence_table.search().where(where).select(["id", "text", "char_start", "source"])
        return {r["id"]: r for r in rows.limit(len(ids)).to_list()}


def check_k(k: int) -> None:
    """Raises ``SearchError`` unless ``k`` is a positive integer."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SearchError(f"k must be a positive integer, not {k!r}")


def check_word(word: str) -> str:
    """``word`` lower-cased and stripped; ``EmptyQueryError`` when nothing is left, ``SearchError`` for a phrase."""
    if not isinstance(word, str) or not word.strip():
        raise EmptyQueryError("the word to search for is empty")
    if len(word.split()) > 1:
        raise SearchError(f"word search takes one word (a token), not {word!r}")
    return word.strip().lower()


def main(argv: list[str]) -> int:
    """The ``python -m search.query`` command."""
    configure_client_retries()  # before any storage client exists
    parser = argparse.ArgumentParser(
        prog="python -m search.query",
        allow_abbrev=False,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sentence = sub.add_parser("sentence", allow_abbrev=False, help="the sentences nearest to a query sentence")
    sentence.add_argument("index")
    sentence.add_argument("text")
    word = sub.add_parser("word", allow_abbrev=False, help="a word's occurrences, in the sense of an example first")
    word.add_argument("index")
    word.add_argument("word")
    word.add_argument("example", help="a sentence that uses the word in the sense wanted")
    word.add_argument("--raw", action="store_true", help="plain cosine, without centring on the word's mean")
    for p in (sentence, word):
        p.add_argument("-k", type=int, default=10, help="how many results (default 10)")
        p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
        p.add_argument("--model", default=None, help="model directory (default: the one the index records)")
        p.add_argument("--storage_option", action="append", default=[], metavar="KEY=VALUE")
        add_debug_flag(p)
    args = parser.parse_args(argv)
    from search.index import parse_storage_options

    index = SearchIndex.open(
        args.index, model_dir=args.model, storage_options=parse_storage_options(args.storage_option)
    )
    if args.command == "sentence":
        results = index.sentences(args.text, k=args.k)
        columns = ["rank", "score", "id", "text"]
    else:
        results = index.word(args.word, args.example, k=args.k, centre=not args.raw)
        columns = ["rank", "score", "sentence_id", "text"]
    sys.stdout.write(output.json_lines(results) if args.json else output.table(results, columns))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="python -m search.query"))
