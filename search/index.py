"""Build a search index from a run folder, or bring one up to date with a newer (nightly) run.

    python -m search.index RUN_DIR INDEX [--rebuild] [--ann_threshold N] [--storage_option KEY=VALUE ...] [--json]

``RUN_DIR``: a finished run folder (``_SUCCESS``), or a pipeline ``--output`` folder (its ``LATEST`` run).
``INDEX``: a LanceDB database, a local directory or a ``gs://`` / ``s3://`` URI.

An index that does not exist yet is built from the run. An existing one is updated in place: only the sentences
whose row changed are re-written (new and edited sentences are upserted, vanished ones deleted, with their token
rows), and the index records the run it now reflects. Applying the same run again changes nothing. A run of
another model or other vector settings than the index is refused (``--rebuild`` replaces the index instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from elmo.cli import add_debug_flag, run_cli
from elmo.retries import configure_client_retries
from search import store
from search.errors import IndexModelError, SearchError
from search.runs import Run, open_run, row_digests, vectors_of

HISTORY = 30  # runs remembered in the state record
WRITE_ROWS = 20_000  # sentences per write (each write is a LanceDB fragment and a table version)
STATE_FORMAT = 1


def apply_run(
    run_path: str,
    index_uri: str,
    *,
    rebuild: bool = False,
    ann_threshold: int = store.ANN_THRESHOLD,
    storage_options: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Builds the index at ``index_uri`` from the run at ``run_path``, or applies the run to it.

    Returns a summary: ``mode`` (``build``, ``update`` or ``unchanged``), ``upserted``/``deleted`` sentence counts,
    row counts, whether an ANN index exists, and for a nightly run applied on top of its own previous run the
    pipeline's delta (``vertex-delta/``) and whether it agrees with what was applied. Raises
    ``RunNotFinishedError`` for a run without ``_SUCCESS`` and ``IndexModelError`` when the index holds another
    model's vectors (or other vector settings).
    """
    if ann_threshold < 1:
        raise SearchError(f"ann_threshold must be >= 1, not {ann_threshold}")
    run = open_run(run_path)
    db = store.connect(index_uri, storage_options)
    state = None if rebuild else store.read_state(db)
    if state is not None:
        check_same_model(state, run, index_uri)
    mode = "build" if state is None else "update"
    if mode == "build":  # a rebuild, or leftovers of a build that never wrote its state
        for name in (store.SENTENCES, store.TOKENS):
            if store.open_table(db, name) is not None:
                db.drop_table(name)
    dim = int(run.manifest["model"]["output_dim"])
    sentences = store.open_table(db, store.SENTENCES)
    if sentences is None:
        sentences = db.create_table(store.SENTENCES, schema=store.sentence_schema(dim))
    tokens = None
    if run.has_token_vectors:
        tokens = store.open_table(db, store.TOKENS)
        if tokens is None:
            tokens = db.create_table(store.TOKENS, schema=store.token_schema(dim))

    new = run.metadata()
    old = sentences.search().select(["id", "row_digest"]).limit(None).to_arrow() if mode == "update" else None
    upserts, replaced, deletes = diff(new, old)
    if state is not None and not upserts and not deletes and state["run"] == run.entry():
        if not store.maintain_indexes(db, changed=False, threshold=ann_threshold).get("ann_created"):
            return {"mode": "unchanged", "run": run.path, "upserted": 0, "deleted": 0, **state["rows"]}
    if tokens is not None:  # token rows first: a crash before the sentence rows are written is redone next time
        store.delete_ids(tokens, "sentence_id", sorted(replaced | deletes))
    store.delete_ids(sentences, "id", sorted(deletes))
    pending: list[pa.Table] = []

    def write(batches: list[pa.Table]) -> None:
        if not batches:
            return
        batch = pa.concat_tables(batches)
        if tokens is not None:
            token_rows = token_table(batch, dim)
            if token_rows.num_rows:
                tokens.add(token_rows)
        rows = sentence_table(batch, dim)
        if mode == "build" or not replaced:
            sentences.add(rows)
        else:
            sentences.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(rows)
        batches.clear()

    for batch in run.rows(None if mode == "build" else upserts, with_tokens=tokens is not None):
        pending.append(batch)
        if sum(b.num_rows for b in pending) >= WRITE_ROWS:  # few, large fragments
            write(pending)
    write(pending)
    indexes = store.maintain_indexes(db, changed=bool(upserts or deletes), threshold=ann_threshold)

    counts = {"sentences": sentences.count_rows(), "tokens": tokens.count_rows() if tokens is not None else 0}
    summary: dict[str, Any] = {
        "mode": mode,
        "run": run.path,
        "upserted": len(upserts),
        "deleted": len(deletes),
        **counts,
        "ann_index": indexes["ann"],
    }
    if state is not None and run.previous_run_dir and same_path(state["run"]["run_dir"], run.previous_run_dir):
        delta = run.delta()
        if delta is not None:
            summary["pipeline_delta"] = {
                "upserts": len(delta[0]),
                "deletes": len(delta[1]),
                "agrees": delta[1] == deletes and delta[0] <= upserts,
            }
    history = ([] if state is None else state.get("history", []))[-(HISTORY - 1) :]
    history.append({**run.entry(), "mode": mode, "upserted": len(upserts), "deleted": len(deletes)})
    store.write_state(db, new_state(run, counts, ann_threshold, indexes["ann"], history))
    return summary


def new_state(run: Run, counts: dict[str, int], threshold: int, ann: bool, history: list) -> dict[str, Any]:
    """The state record: the run the index reflects, the model and vector settings, the row counts."""
    model = run.manifest["model"]
    return {
        "format": STATE_FORMAT,
        "run": run.entry(),
        "model": {
            "dir": model.get("dir"),
            "fingerprint": run.fingerprint,
            "output_dim": model.get("output_dim"),
            "n_layers": model.get("n_layers"),
            "vector_settings": run.vector_settings,
            "vector_settings_digest": model.get("vector_settings_digest"),
        },
        "token_vectors": run.has_token_vectors,
        "rows": counts,
        "ann_threshold": threshold,
        "ann_index": ann,
        "history": history,
    }


def check_same_model(state: dict[str, Any], run: Run, index_uri: str) -> None:
    """Raises ``IndexModelError`` unless the run's model fingerprint and vector settings are the index's."""
    held = state["model"]["vector_settings"]
    differ = sorted(k for k in set(held) | set(run.vector_settings) if held.get(k) != run.vector_settings.get(k))
    if differ:
        what = (
            f"model {run.fingerprint}, the index holds model {state['model']['fingerprint']}"
            if "fingerprint" in differ
            else f"other vector settings ({', '.join(differ)})"
        )
        raise IndexModelError(
            f"run {run.path} has {what}: vectors of different models or settings cannot share an index "
            f"({index_uri}); use another index path or --rebuild"
        )


def same_path(a: str | None, b: str | None) -> bool:
    """Whether two run folder paths name the same folder (local paths compared absolute)."""
    if not a or not b:
        return False
    norm = [p.rstrip("/") if "://" in p else os.path.abspath(p) for p in (a, b)]
    return norm[0] == norm[1]


def diff(new: pa.Table, old: pa.Table | None) -> tuple[set[str], set[str], set[str]]:
    """(ids to write, of those the ones the index already holds, ids to delete) from the run's and the index's
    ``id``/``row_digest`` columns."""
    if old is None or old.num_rows == 0:
        return set(new.column("id").to_pylist()), set(), set()
    joined = new.join(old, keys="id", join_type="full outer", left_suffix="_new", right_suffix="_old")
    ids, dn, do = (joined.column(c) for c in ("id", "row_digest_new", "row_digest_old"))
    write = pc.and_(pc.is_valid(dn), pc.or_kleene(pc.is_null(do), pc.not_equal(dn, do)))
    upserts = set(pc.filter(ids, write).to_pylist())
    replaced = set(pc.filter(ids, pc.and_(write, pc.is_valid(do))).to_pylist())
    deletes = set(pc.filter(ids, pc.is_null(dn)).to_pylist())
    return upserts, replaced, deletes


def sentence_table(batch: pa.Table, dim: int) -> pa.Table:
    """Run rows -> ``sentences`` rows (vectors as float32)."""
    vectors = vectors_of(batch.column("sentence_vector"), batch.num_rows)
    columns = {name: batch.column(name) for name in store.sentence_schema(dim).names if name in batch.column_names}
    columns["row_digest"] = row_digests(batch)
    columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim)
    return pa.table(columns).cast(store.sentence_schema(dim))


def token_vectors(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    """A run's ``token_vectors`` column -> (total tokens, dim) float32: the stored layer mix, or for
    ``layers=all`` the average of the L+1 layers (the same reduction as the sentence vector)."""
    per_token = column.combine_chunks().flatten()  # one element per token
    n = len(per_token)
    values = per_token
    while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
        values = values.flatten()
    values = np.asarray(values, dtype=np.float32).reshape(n, -1)
    if values.shape[1] != dim:  # (L+1) * dim: every layer
        values = values.reshape(n, -1, dim).mean(axis=1)
    return values


def token_table(batch: pa.Table, dim: int) -> pa.Table:
    """Run rows -> ``tokens`` rows, one per token occurrence."""
    lengths = np.asarray(pc.list_value_length(batch.column("tokens")).fill_null(0), dtype=np.int64)
    tokens = batch.column("tokens").combine_chunks().flatten()
    vectors = token_vectors(batch.column("token_vectors"), dim)
    if len(tokens) != len(vectors):
        raise SearchError(f"{len(tokens)} tokens but {len(vectors)} token vectors in a batch of the run")
    positions = np.concatenate([np.arange(n, dtype=np.int32) for n in lengths]) if len(lengths) else []
    sentence_of = np.repeat(np.arange(batch.num_rows), lengths)
    table = pa.table(
        {
            "sentence_id": batch.column("id").take(sentence_of),
            "doc_id": batch.column("doc_id").take(sentence_of),
            "position": pa.array(positions, pa.int32()),
            "token": tokens,
            "word": pc.utf8_lower(tokens),
            "char_start": batch.column("token_starts").combine_chunks().flatten().cast(pa.int64()),
            "char_end": batch.column("token_ends").combine_chunks().flatten().cast(pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim),
        }
    )
    return table.cast(store.token_schema(dim))


def parse_storage_options(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings -> a dict (LanceDB/object_store options, e.g. ``aws_endpoint=http://...``)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SearchError(f"--storage_option {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def main(argv: list[str]) -> int:
    """The ``python -m search.index`` command."""
    configure_client_retries()  # before any storage client exists
    parser = argparse.ArgumentParser(
        prog="python -m search.index",
        allow_abbrev=False,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", help="run folder (or pipeline output folder with LATEST): local, gs:// or s3://")
    parser.add_argument("index", help="index location (LanceDB database): local directory, gs:// or s3://")
    parser.add_argument("--rebuild", action="store_true", help="replace the index with one built from this run")
    parser.add_argument(
        "--ann_threshold",
        type=int,
        default=store.ANN_THRESHOLD,
        help=f"sentence rows from which an ANN index is built (default {store.ANN_THRESHOLD}); exact search below",
    )
    parser.add_argument(
        "--storage_option", action="append", default=[], metavar="KEY=VALUE", help="LanceDB storage option"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    summary = apply_run(
        args.run,
        args.index,
        rebuild=args.rebuild,
        ann_threshold=args.ann_threshold,
        storage_options=parse_storage_options(args.storage_option),
    )
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(
            f"{summary['mode']}: {args.index} now reflects {summary['run']}: {summary['upserted']} sentences written, "
            f"{summary['deleted']} deleted; {summary['sentences']} sentences, {summary['tokens']} tokens"
            + ("" if summary["mode"] == "unchanged" else f"; ANN index: {'yes' if summary['ann_index'] else 'no'}")
        )
        if "pipeline_delta" in summary:
            d = summary["pipeline_delta"]
            print(f"pipeline delta: {d['upserts']} upserts, {d['deletes']} deletes; agrees: {d['agrees']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="python -m search.index"))
