"""What both benchmark workers share: their command line, the timing loop and how results are handed back.

A worker runs in its own process (ours in the project's venv, the reference in the AllenNLP venv), so this module
imports only the standard library, numpy and torch, which both venvs have. The worker gets a JSON file of
sentences (lists of tokens), embeds them ``--batch-size`` at a time with a zero initial LSTM state, and reports
every timed pass over all sentences (wall-clock and process CPU seconds) in one JSON line on stdout. With ``--out``
it also saves the layers of every token, (L+1, total tokens, 2P) in sentence order, for the parity check.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

# One batch of token lists -> a float32 array (L+1, B, T_max, 2P) without sentence boundaries.
EmbedBatch = Callable[[Sequence[Sequence[str]]], torch.Tensor]


def build_parser(description: str) -> argparse.ArgumentParser:
    """The command line both workers accept."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=description)
    parser.add_argument("--options", required=True, help="options.json of the model")
    parser.add_argument("--weights", required=True, help="weights .hdf5 of the model (official layout)")
    parser.add_argument("--sentences", required=True, help="JSON file: a list of sentences, each a list of tokens")
    parser.add_argument("--threads", type=int, required=True, help="torch.set_num_threads value")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per forward pass")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes over all sentences")
    parser.add_argument("--iters", type=int, default=5, help="timed passes over all sentences")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="parameter dtype")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bench_gpu.py)")
    parser.add_argument("--out", help="save the layers of every token here (.npy) for the parity check")
    return parser


def torch_dtype(name: str) -> torch.dtype:
    """``float32`` or ``float64`` -> the torch dtype."""
    return {"float32": torch.float32, "float64": torch.float64}[name]


def set_threads(threads: int) -> None:
    """Pins torch's intra-op thread count (the caller also sets OMP/MKL_NUM_THREADS in the environment)."""
    torch.set_num_threads(threads)


def load_sentences(path: str) -> list[list[str]]:
    """Reads the benchmark input written by the driver."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def batches(sentences: list[list[str]], size: int) -> list[list[list[str]]]:
    """Consecutive batches of ``size`` sentences, in input order (the same split on both sides)."""
    return [sentences[i : i + size] for i in range(0, len(sentences), size)]


def one_pass(embed_batch: EmbedBatch, split: list[list[list[str]]]) -> list[torch.Tensor]:
    """Embeds every batch once; returns the outputs so that the work cannot be skipped (on a GPU, after waiting
    for the queued kernels, so that a timer around it measures the work)."""
    outputs = [embed_batch(batch) for batch in split]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return outputs


def token_layers(outputs: list[torch.Tensor], split: list[list[list[str]]]) -> np.ndarray:
    """Concatenates the real tokens of every sentence: (L+1, total tokens, 2P) in sentence order, in the output's
    dtype."""
    pieces = []
    for layers, batch in zip(outputs, split, strict=True):
        array = layers.detach().cpu().numpy()
        pieces.extend(array[:, row, : len(tokens)] for row, tokens in enumerate(batch))
    return np.concatenate(pieces, axis=1)


def run_worker(
    args: argparse.Namespace,
    embed_batch: EmbedBatch,
    info: dict,
    before_pass: Callable[[], None] | None = None,
    report: Callable[[], dict] | None = None,
) -> None:
    """Warm-up, timed passes (wall and process CPU time), optional output dump, then one JSON line on stdout.

    ``before_pass`` runs before every pass, untimed (e.g. emptying a cache, so that each pass starts cold);
    ``report()`` adds measurements of the timed passes to the result line."""
    sentences = load_sentences(args.sentences)
    split = batches(sentences, args.batch_size)
    for _ in range(args.warmup):
        if before_pass:
            before_pass()
        one_pass(embed_batch, split)
    seconds, cpu_seconds = [], []
    for _ in range(args.iters):
        if before_pass:
            before_pass()
        start, cpu_start = time.perf_counter(), time.process_time()
        one_pass(embed_batch, split)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    info = {**info, **(report() if report else {})}
    if args.out:
        if before_pass:
            before_pass()
        np.save(args.out, token_layers(one_pass(embed_batch, split), split))
    result = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "median_s": statistics.median(seconds) if seconds else None,
        "tokens": sum(len(s) for s in sentences),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pid": os.getpid(),
        **info,
    }
    print("RESULT " + json.dumps(result), flush=True)
