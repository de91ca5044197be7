"""Training throughput of ``elmo.training.train`` on this machine: tokens per second per direction.

    nice .venv/bin/python bench/bench_train.py --train '/data/corpus/train-0000[0-1]-*.txt' --vocab VOCAB \
        [--threads 1 2] [--batch-sizes 64 128 256] [--steps 10] [--precisions float32 bf16]

Each setting builds a fresh trainer on the built-in model's shape (or ``--options``), runs 3 warm-up steps, then
times ``--steps`` training steps (sampled softmax with ``--negatives`` negatives, windows of 20 tokens). One
process at a time; the machine should be otherwise quiet (torch with 2 threads on a busy 2-core box is
pathological). Prints a Markdown table with each setting's tokens/s and its ratio to the first row. ``bf16`` (the
trainer's ``--bf16`` autocast) is measured by default only where ``elmo.bf16`` offers it (AMX CPUs).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from elmo.bf16 import bf16_refusal
from elmo.config import ElmoConfig
from elmo.training.train import TrainConfig, Trainer, small_english_config

WARMUP_STEPS = 3


def tokens_per_second(config: TrainConfig, steps: int) -> float:
    """Tokens per second per direction over ``steps`` timed steps after the warm-up."""
    trainer = Trainer(config, torch.device("cpu"))
    for _ in range(WARMUP_STEPS):
        trainer.train_step()
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return steps * config.batch_size * config.unroll_steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="glob of training shards (a few million tokens is plenty)")
    parser.add_argument("--vocab", required=True)
    parser.add_argument("--options", default="", help="options.json of the model shape (default: the built-in's)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--negatives", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--precisions", nargs="+", choices=["float32", "bf16"], default=None)
    args = parser.parse_args()
    precisions = args.precisions or ["float32"] + ([] if bf16_refusal(torch.device("cpu")) else ["bf16"])
    model = ElmoConfig.from_json(args.options) if args.options else small_english_config()
    rows = []
    for threads, batch_size, precision in itertools.product(args.threads, args.batch_sizes, precisions):
        torch.set_num_threads(threads)
        config = TrainConfig(
            train=args.train,
            vocab=args.vocab,
            out="/nonexistent",  # never written: no checkpoint is saved
            batch_size=batch_size,
            n_negative_samples=args.negatives,
            max_steps=10**9,
            model=model.to_dict(),
            bf16=precision == "bf16",
        )
        rate = tokens_per_second(config, args.steps)
        rows.append((threads, batch_size, precision, rate))
        print(f"threads {threads} batch {batch_size} {precision}: {rate:,.0f} tokens/s", file=sys.stderr, flush=True)
    base = rows[0][3]
    print("| torch threads | batch (lanes) | precision | tokens/s per direction | vs first row |")
    print("| --- | --- | --- | --- | --- |")
    for threads, batch_size, precision, rate in rows:
        print(f"| {threads} | {batch_size} | {precision} | {rate:,.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
