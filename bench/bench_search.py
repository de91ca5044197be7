"""Benchmark of the search index at scale: synthetic sentence vectors of our dimension in a LanceDB table.

    nice .venv/bin/python bench/bench_search.py [--rows 1000000] [--dim 256] [--dir /tmp/bench-search]

Vectors: real sentence vectors are clustered and of low intrinsic dimension, unlike uniform random vectors (on
which every point is about equally far from every other, so "nearest" means little and every ANN index fails).
So: ``--clusters`` centres in a ``--latent``-dimensional space, points scattered around them there, mapped to
``--dim`` dimensions by a fixed random matrix, plus a little isotropic noise. Queries are fresh points drawn the
same way. Measured: write time, IVF_PQ build time (the parameters ``search.store`` uses), on-disk size, query
latency p50/p95 of the ANN index (two ``nprobes``) and of LanceDB's exact search (at ``--rows`` and at the
``ANN_THRESHOLD`` row count), and recall@10 of the ANN index against exact cosine neighbours (numpy, brute force).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search import store

CHUNK = 100_000


class Generator:
    """Synthetic clustered vectors of low intrinsic dimension (float32)."""

    def __init__(self, dim: int, latent: int, clusters: int, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.centres = self.rng.standard_normal((clusters, latent), dtype=np.float32)
        self.mixing = self.rng.standard_normal((latent, dim), dtype=np.float32) / np.sqrt(latent)
        self.dim = dim

    def sample(self, n: int) -> np.ndarray:
        """``n`` vectors: a centre + N(0, 0.5^2) in latent space, mapped up, + N(0, 0.05^2) in every dimension."""
        pick = self.rng.integers(0, len(self.centres), n)
        latent = self.centres[pick] + 0.5 * self.rng.standard_normal((n, self.centres.shape[1]), dtype=np.float32)
        noise = 0.05 * self.rng.standard_normal((n, self.dim), dtype=np.float32)
        return (latent @ self.mixing + noise).astype(np.float32)


def write_table(db, name: str, vectors: np.ndarray):
    """A table of ``vectors`` (ids ``s0``...), written in chunks of ``CHUNK``; returns it."""
    table = None
    for start in range(0, len(vectors), CHUNK):
        part = vectors[start : start + CHUNK]
        data = pa.table(
            {
                "id": [f"s{i}" for i in range(start, start + len(part))],
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(part.ravel()), vectors.shape[1]),
            }
        )
        if table is None:
            table = db.create_table(name, data)
        else:
            table.add(data)
    return table


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> list[set[str]]:
    """The ids of each query's ``k`` nearest rows by cosine (numpy brute force, in chunks)."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    for start in range(0, len(vectors), CHUNK):
        part = vectors[start : start + CHUNK]
        s = (part / np.linalg.norm(part, axis=1, keepdims=True)) @ q.T  # (chunk, Q)
        top = np.argpartition(-s, k, axis=0)[:k].T  # (Q, k)
        best_s = np.concatenate([best_s, np.take_along_axis(s.T, top, axis=1)], axis=1)
        best_i = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-best_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return [{f"s{i}" for i in row} for row in best_i]


def timed(table, queries: np.ndarray, k: int, exact: bool, nprobes: int = store.NPROBES):
    """Per-query seconds and result id sets."""
    times, ids = [], []
    for q in queries:
        t0 = time.perf_counter()
        result = store.vector_search(table, q, k, exact=exact, nprobes=nprobes)
        times.append(time.perf_counter() - t0)
        ids.append(set(result.column("id").to_pylist()))
    return times, ids


def size_of(path: Path) -> int:
    """Bytes under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> None:
    """Runs the benchmark and prints its table."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--latent", type=int, default=32, help="intrinsic dimension of the synthetic vectors")
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact_queries", type=int, default=10, help="queries timed with LanceDB's exact search")
    parser.add_argument("--dir", default="/tmp/bench-search")
    args = parser.parse_args(argv)
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    gen = Generator(args.dim, args.latent, args.clusters)
    vectors = np.concatenate([gen.sample(min(CHUNK, args.rows - s)) for s in range(0, args.rows, CHUNK)])
    queries = gen.sample(args.queries)
    truth = exact_neighbours(vectors, queries, 10)
    db = store.connect(str(root / "db"))

    t0 = time.perf_counter()
    table = write_table(db, "big", vectors)
    write_s = time.perf_counter() - t0
    data_bytes = size_of(root / "db" / "big.lance")
    t0 = time.perf_counter()
    table.create_index("vector", config=store.ann_config(args.rows, args.dim))
    index_s = time.perf_counter() - t0
    total_bytes = size_of(root / "db" / "big.lance")

    timed(table, queries[:5], 10, exact=False)  # warm the index cache
    ann = {}
    for nprobes in (store.NPROBES, 50):
        t, ids = timed(table, queries, 10, exact=False, nprobes=nprobes)
        ann[nprobes] = (t, np.mean([len(a & e) / 10 for a, e in zip(ids, truth, strict=True)]))
    exact_t, exact_ids = timed(table, queries[: args.exact_queries], 10, exact=True)
    exact_recall = np.mean([len(a & e) / 10 for a, e in zip(exact_ids, truth, strict=False)])
    small = write_table(db, "threshold", vectors[: store.ANN_THRESHOLD])
    small_t, _ = timed(small, queries[: args.exact_queries * 3], 10, exact=True)

    def ms(values: list[float]) -> str:
        return f"{1000 * np.percentile(values, 50):.1f} / {1000 * np.percentile(values, 95):.1f} ms"

    parts = store.ann_config(args.rows, args.dim).num_partitions
    print(f"\n{args.rows:,} synthetic vectors x {args.dim} float32 ({args.clusters} clusters, intrinsic dimension ")
    print(f"{args.latent}); lancedb IVF_PQ: {parts} partitions, {args.dim // 8} sub-vectors x 8 bits, cosine, ")
    print(f"re-rank x{store.REFINE_FACTOR}; k = 10; {os.cpu_count()} CPUs (shared)\n")
    print("| measure | value |")
    print("| --- | --- |")
    print(f"| write {args.rows:,} rows | {write_s:.1f} s |")
    print(f"| build the IVF_PQ index | {index_s:.1f} s |")
    print(f"| size on disk: data / data + index | {data_bytes / 2**20:.0f} MiB / {total_bytes / 2**20:.0f} MiB |")
    for nprobes, (t, recall) in ann.items():
        default = " (default)" if nprobes == store.NPROBES else ""
        print(f"| ANN query p50 / p95, nprobes {nprobes}{default}, {args.queries} queries | {ms(t)} |")
        print(f"| recall@10 of ANN vs exact, nprobes {nprobes}{default} | {recall:.3f} |")
    print(f"| exact (flat) query p50 / p95, {args.rows:,} rows, {args.exact_queries} queries | {ms(exact_t)} |")
    threshold = f"{store.ANN_THRESHOLD:,} rows (the threshold), {args.exact_queries * 3} queries"
    print(f"| exact (flat) query p50 / p95, {threshold} | {ms(small_t)} |")
    print(f"| (check) recall@10 of LanceDB's exact search vs numpy | {exact_recall:.3f} |")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
