"""Does the pipeline keep the model's speed? The whole job on the local runner vs the bare model, same text, same
batches, same thread count, side by side in one run.

    .venv/bin/python -m bench.bench_pipeline                       # 200k tokens of real English, built-in model
    .venv/bin/python -m bench.bench_pipeline --tokens 50000 --workers 1 --rounds 1

Input: ``--tokens`` tokens of real English (``bench.scale_data``: State of the Union paragraphs, one document per
line, 40 shards), built once under ``build/bench-pipeline/``.

- pipeline: ``python -m pipeline.run`` on the local runner, wall time of the whole process (start-up, planning,
  model load, read, tokenize, batch, embed, assemble, write, commit). With ``--workers 1`` it runs in-process
  with ``--torch_threads=1``; with N > 1, N worker processes (``multi_processing``), one thread each.
- bare model: the same documents cut by the same tokenizer, length-sorted, in batches under the same token budget
  (``--max_batch_tokens``), through ``Elmo.embed`` with the pipeline's layer choice and token cache, in one process
  with N torch threads; timed from after the model load (so the ratio charges the pipeline with everything else).

A shared machine's speed drifts by 10-15% within minutes, so each worker count runs ``--rounds`` rounds (default
3), alternating which side goes first, one row each, and the median ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.bench_inference import describe_machine
from bench.scale_data import build
from elmo import Elmo
from elmo.model_dir import default_model_dir
from elmo.tokenize import Tokenizer
from elmo.windows import plan_windows

REPO = Path(__file__).resolve().parent.parent
BUILTIN = default_model_dir()
CORPORA = REPO / "build" / "bench-pipeline"
MAX_BATCH_WINDOWS = 512  # the pipeline's default --max_batch_windows


def corpus(tokens: int) -> Path:
    """The corpus of ``tokens`` tokens, built on first use."""
    folder = CORPORA / str(tokens)
    if not folder.exists():
        documents, total = build(tokens, folder)
        print(f"built {folder}: {documents} documents, {total} tokens", flush=True)
    return folder


def windows_of(folder: Path, tokenizer: Tokenizer) -> tuple[list[list[str]], int]:
    """Every inference unit of the corpus as the pipeline cuts it (sentences, long ones as overlapping windows),
    and the number of tokens of the text (overlaps counted once, as the pipeline's ``tokens`` count does)."""
    units, text_tokens = [], 0
    for path in sorted(folder.glob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            for sentence in tokenizer.sentences(line):
                tokens = [t.text for t in sentence.tokens]
                text_tokens += len(tokens)
                spans = plan_windows(len(tokens), tokenizer.config.max_sentence_tokens, tokenizer.config.window_overlap)
                units.extend(tokens[a:b] for a, b in spans)
    return units, text_tokens


def token_budget_batches(units: list[list[str]], max_tokens: int) -> list[list[list[str]]]:
    """Length-sorted batches of at most ``max_tokens`` tokens and ``MAX_BATCH_WINDOWS`` units."""
    batches, current, weight = [], [], 0
    for unit in sorted(units, key=len):
        if current and (weight + len(unit) > max_tokens or len(current) == MAX_BATCH_WINDOWS):
            batches.append(current)
            current, weight = [], 0
        current.append(unit)
        weight += len(unit)
    return batches + ([current] if current else [])


def bare_model(
    units: list[list[str]], threads: int, max_tokens: int, layers: str, cache_size: int | None
) -> tuple[float, float]:
    """Seconds to embed every unit with the built-in model (after loading it), and the cache hit rate."""
    torch.set_num_threads(threads)
    model = Elmo.from_directory(BUILTIN, **({} if cache_size is None else {"token_cache_size": cache_size}))
    batches = token_budget_batches(units, max_tokens)
    start = time.perf_counter()
    for batch in batches:
        model.embed(batch, layers=layers, batch_size=len(batch))
    return time.perf_counter() - start, model.cache_stats.hit_rate


def pipeline(folder: Path, workers: int, max_tokens: int, layers: str, cache_size: int | None) -> tuple[float, dict]:
    """Wall seconds of the whole local job and its manifest counts."""
    with tempfile.TemporaryDirectory(prefix="elmo-bench-pipeline-") as out:
        argv = [sys.executable, "-m", "pipeline.run", f"--input={folder}/*", f"--output={out}", "--run_id=bench"]
        argv += [f"--max_batch_tokens={max_tokens}", f"--layers={layers}", "--torch_threads=1"]
        if cache_size is not None:
            argv.append(f"--token_cache_size={cache_size}")
        if workers > 1:
            argv += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
        env = dict(os.environ, PYTHONWARNINGS="ignore", NO_GCE_CHECK="true")
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"the job failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        manifest = json.loads((Path(out) / "bench" / "manifest.json").read_text(encoding="utf-8"))
    return seconds, manifest["counts"]


def main(argv: list[str] | None = None) -> int:
    """Builds the corpus, runs both sides, prints the table."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=200_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes / torch threads")
    parser.add_argument("--max-batch-tokens", type=int, default=2048, help="the pipeline's --max_batch_tokens")
    parser.add_argument("--layers", default="average", help="the pipeline's --layers")
    parser.add_argument(
        "--token-cache-size", type=int, default=None, help="both sides' token cache (default: the pipeline's)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds per worker count, alternating which side runs first (median shown)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    folder = corpus(args.tokens)
    tokenizer = Tokenizer.from_json((BUILTIN / "tokenizer.json").read_text(encoding="utf-8"))
    units, n_tokens = windows_of(folder, tokenizer)
    print(f"# Pipeline vs bare model ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch {torch.__version__})")
    print(f"machine: {describe_machine()}")
    cache = "default" if args.token_cache_size is None else args.token_cache_size
    print(f"input: {folder}, {len(units)} windows, {n_tokens} tokens; built-in model, --layers={args.layers}, ", end="")
    print(f"token cache size {cache}\n")
    print("| workers | round | pipeline wall s | pipeline tok/s | bare model s | bare tok/s | pipeline / bare ", end="")
    print("| cache hits |")
    print("|---|---|---|---|---|---|---|---|")
    for workers in args.workers:
        settings = (workers, args.max_batch_tokens, args.layers, args.token_cache_size)
        ratios = []
        for round_index in range(args.rounds):
            # alternate which side runs first, so a slow spell of a shared machine does not always hit one side
            if round_index % 2 == 0:
                (bare_s, hit_rate), (job_s, counts) = bare_model(units, *settings), pipeline(folder, *settings)
            else:
                (job_s, counts), (bare_s, hit_rate) = pipeline(folder, *settings), bare_model(units, *settings)
            embedded = counts["tokens"]
            if embedded != n_tokens:
                raise SystemExit(f"the job counted {embedded} tokens, the bare model {n_tokens}: not the same text")
            ratios.append((embedded / job_s) / (n_tokens / bare_s))
            print(
                f"| {workers} | {round_index + 1} | {job_s:.1f} | {embedded / job_s:,.0f} | {bare_s:.1f} | "
                f"{n_tokens / bare_s:,.0f} | {ratios[-1]:.0%} | {hit_rate:.0%} |",
                flush=True,
            )
        if len(ratios) > 1:
            print(
                f"| {workers} | median of {len(ratios)} | | | | | **{statistics.median(ratios):.0%}** | |", flush=True
            )
    print(f"\nmachine at end: {describe_machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
