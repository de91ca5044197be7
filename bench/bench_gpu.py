"""The GPU comparison in one prepared command: ours (float32, bf16, bit-exact) vs AllenNLP 2.10.1 on the same GPU.

    .venv/bin/python -m bench.bench_gpu                       # prints "no GPU" and exits 2 on a CPU-only machine
    .venv/bin/python -m bench.bench_gpu --configs original builtin --sentences 4096 --batch-size 256

GPU time is scarce, so the run is short (minutes): per config, the reference once (if its venv exists:
``scripts/install_reference.sh``; otherwise ours only, said so), ours in each mode, each in its own process on the
same GPU, the same real-English sentences (``bench.bench_speed``) in length-sorted batches of ``--batch-size``.
The token cache lives on the GPU and is emptied before every pass. Prints tokens/s, ratio, max |diff| against
AllenNLP (float32), the LSTM part's GFLOP/s next to the step-GEMM peak, and what a billion tokens costs at
``--usd-per-hour`` for one worker (state the price you assume: the default is a Dataflow worker with one NVIDIA L4,
g2-standard-4, at about 1.00 USD/hour list price in us-central1 in 2026: vCPU, memory and GPU together).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.bench_inference import fixture_model, max_abs_diff, write_random_model
from bench.bench_speed import CONFIGS, builtin_model, english_sentences, run_worker

GPU_MODES = ("default", "bf16", "bit-exact")
DEFAULT_USD_PER_HOUR = 1.00


def main(argv: list[str] | None = None) -> int:
    """Runs every config and mode on the GPU and prints one table."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=["small", "original", "builtin"])
    parser.add_argument("--sentences", type=int, default=4096)
    parser.add_argument("--max-tokens", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4, help="CPU threads of each worker process")
    parser.add_argument("--usd-per-hour", type=float, default=DEFAULT_USD_PER_HOUR)
    parser.add_argument("--reference-python", default=str(Path("build/venv-reference/bin/python").resolve()))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no GPU: torch.cuda.is_available() is False on this machine; nothing was measured.")
        return 2
    args.rounds = 1
    device = torch.cuda.get_device_name(0)
    has_reference = Path(args.reference_python).exists()
    print(f"# ELMo on {device}: ours vs AllenNLP 2.10.1 (torch {torch.__version__}, batch {args.batch_size})")
    if not has_reference:
        print(f"AllenNLP not measured: no reference venv at {args.reference_python}")
    print(f"cost per billion tokens at {args.usd_per_hour:.2f} USD per worker-hour\n")
    print(
        "| config | mode | ours tok/s | AllenNLP tok/s | ratio | max \\|diff\\| vs AllenNLP | LSTM GFLOP/s | "
        "step-GEMM peak | LSTM % of its GEMMs alone | USD per 1e9 tokens |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="elmo-gpu-") as tmp:
        scratch = Path(tmp)
        for name in args.configs:
            sentences = english_sentences(args.sentences, args.max_tokens)
            path = scratch / f"{name}.json"
            path.write_text(json.dumps(sentences), encoding="utf-8")
            model = {"tiny": fixture_model, "builtin": builtin_model}.get(name)
            model = model(scratch) if model else write_random_model(name, scratch)
            common = {"device": "cuda", "batch-size": args.batch_size}
            ref = ref_out = None
            if has_reference:
                ref_out = scratch / f"{name}-ref.npy"
                ref = run_worker("ref", model, path, args, out=ref_out, **common)
            for mode in GPU_MODES:
                out = scratch / f"{name}-{mode}.npy"
                ours = run_worker("ours", model, path, args, out=out, mode=mode, **common)
                r = ours.result
                diff = f"{max_abs_diff(np.load(out), np.load(ref_out), name):.1e}" if ref else "-"
                ref_rate = f"{ref.tokens_per_s:,.0f}" if ref else "-"
                ratio = f"{ours.tokens_per_s / ref.tokens_per_s:.2f}" if ref else "-"
                usd = args.usd_per_hour * 1e9 / ours.tokens_per_s / 3600
                print(
                    f"| {name} | {mode} | {ours.tokens_per_s:,.0f} | {ref_rate} | {ratio} | {diff} | "
                    f"{r['lstm_gflops']:,.0f} | {r['gemm_peak_gflops']:,.0f} | "
                    f"{100 * r['lstm_share_of_own_gemms']:.0f}% | {usd:,.2f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
