"""Whether two run folders hold the same output: the same sentence records (ids, texts, tokens) and counts, and
sentence vectors within a tolerance (issue 12's acceptance: Flink's output equals the local runner's).

    .venv/bin/python -m bench.compare_runs build/scale/out-local-400000/<run> build/scale/out-flink-400000/<run>

Prints one line of figures; exits 1 when the records or counts differ or a vector differs by more than ``--atol``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_ATOL = 1e-4


def read_run(run_dir: Path) -> tuple[dict, dict[str, tuple], np.ndarray, list[str]]:
    """(manifest counts, id -> (text, tokens), vectors (rows, W) in id order, ids in that order)."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    columns = ["id", "text", "tokens", "sentence_vector"]
    table = pa.concat_tables(
        pq.read_table(f, columns=columns) for f in sorted((run_dir / "sentences").glob("*.parquet"))
    )
    table = table.sort_by("id")
    ids = table.column("id").to_pylist()
    texts = table.column("text").to_pylist()
    tokens = [tuple(t) for t in table.column("tokens").to_pylist()]
    records = dict(zip(ids, zip(texts, tokens, strict=True), strict=True))
    vectors = np.asarray(table.column("sentence_vector").combine_chunks().flatten()).reshape(table.num_rows, -1)
    return manifest["counts"], records, vectors, ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL)
    args = parser.parse_args(argv)
    counts_a, records_a, vectors_a, ids_a = read_run(args.a)
    counts_b, records_b, vectors_b, ids_b = read_run(args.b)
    differing_counts = sorted(k for k in counts_a.keys() | counts_b.keys() if counts_a.get(k) != counts_b.get(k))
    same_records = records_a == records_b and len(ids_a) == len(set(ids_a))
    diff = float(np.abs(vectors_a.astype(np.float64) - vectors_b).max()) if same_records and ids_a else float("nan")
    ok = same_records and not differing_counts and diff <= args.atol
    print(
        f"sentences {len(ids_a)} vs {len(ids_b)}; records {'equal' if same_records else 'DIFFER'}; "
        f"counts {'equal' if not differing_counts else 'DIFFER: ' + ', '.join(differing_counts)}; "
        f"max |vector diff| {diff:.3g} (atol {args.atol:g}): {'SAME' if ok else 'NOT THE SAME'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
