"""Measures the peak memory of local pipeline runs (FnApiRunner) at a few input sizes; the source of the
coefficients in pipeline/memory.py (figures in docs/local-memory.md).

    .venv/bin/python scripts/measure_local_memory.py --tokens 50000 --out /tmp/mem.jsonl
    .venv/bin/python scripts/measure_local_memory.py --tokens 100000 --workers 2 -- --token_vectors

Builds an input of about ``--tokens`` tokens of real English from sample_data/sotu (every document as one line of
plain text, the whole sample repeated in copies with distinct file names, so ids stay unique; ``--one_document``
joins it all into a single line), runs ``python -m pipeline.run`` on it as a child process (``nice -n 10``), and
samples the child's whole process tree every 0.1 s from /proc: the sum of RSS, of PSS, and "memory": the
anonymous resident memory summed plus the largest file-backed resident set (shared libraries counted once; for
one process this is its RSS), the peak of each. Appends one JSON
line per run to ``--out`` and prints it. Linux only.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data" / "sotu"
SAMPLE_TOKENS = 23_072  # tokens of the whole sample with the built-in tokenizer (docs/pipeline.md)


def sample_documents() -> list[str]:
    """Every document of the sample, as one line of text each."""
    docs = []
    for path in sorted(SAMPLE.iterdir()):
        if path.suffix == ".jsonl":
            lines = path.read_text(encoding="utf-8").splitlines()
            docs += [json.loads(line)["text"] for line in lines if line.strip()]
        else:
            text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
            docs += [line for line in text.splitlines() if line.strip()]
    return [" ".join(d.split()) for d in docs]  # one line each


def build_input(directory: Path, tokens: int, one_document: bool) -> int:
    """Writes about ``tokens`` tokens of sample text under ``directory``; returns the bytes written."""
    docs = sample_documents()
    copies = max(1, round(tokens / SAMPLE_TOKENS))
    if one_document:
        text = " ".join(docs * copies)
        (directory / "one.txt").write_text(text + "\n", encoding="utf-8")
    else:
        for i in range(copies):
            (directory / f"copy-{i:03d}.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    return sum(f.stat().st_size for f in directory.iterdir())


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _kb(path: str, field: str) -> int:
    try:
        with open(path) as f:
            match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
        return int(match.group(1)) * 1024 if match else 0
    except OSError:
        return 0


def sample_tree(pid: int) -> tuple[int, int, int, int]:
    """(sum of RSS, sum of PSS, memory, number of processes) of ``pid`` and its descendants; memory is the sum of
    the anonymous resident memory plus the largest file-backed resident set (the libraries, which the processes
    share, counted once): equal to RSS for one process, and unlike PSS not shared with unrelated processes."""
    pids = _tree(pid)
    rss = sum(_kb(f"/proc/{p}/status", "VmRSS") for p in pids)
    pss = sum(_kb(f"/proc/{p}/smaps_rollup", "Pss") for p in pids)
    anon = sum(_kb(f"/proc/{p}/status", "RssAnon") + _kb(f"/proc/{p}/status", "RssShmem") for p in pids)
    files = max((_kb(f"/proc/{p}/status", "RssFile") for p in pids), default=0)
    return rss, pss, anon + files, len(pids)


def measure(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="elmo-mem-") as tmp:
        data = Path(tmp) / "in"
        data.mkdir()
        n_bytes = build_input(data, args.tokens, args.one_document)
        extra = list(args.flags)
        if args.workers > 1:
            extra += [f"--direct_num_workers={args.workers}", "--direct_running_mode=multi_processing"]
        if args.one_document:
            extra.append(f"--max_document_bytes={n_bytes + 1}")
        cmd = ["nice", "-n", "10", sys.executable, "-m", "pipeline.run", f"--input={data}/*", f"--output={tmp}/out"]
        cmd.append(f"--model={Path(args.repo) / 'elmo' / 'models' / 'elmo-en-small'}")
        cmd += extra
        env = dict(os.environ, NO_GCE_CHECK="true", PYTHONWARNINGS="ignore::FutureWarning")
        started = time.monotonic()
        out = subprocess.PIPE
        proc = subprocess.Popen(cmd, cwd=args.repo, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        peak_rss = peak_pss = peak_mem = max_procs = 0
        trace: list[tuple[float, int]] = []  # (seconds, memory MiB)
        while proc.poll() is None:
            rss, pss, mem, n = sample_tree(proc.pid)
            peak_rss, peak_pss, peak_mem = max(peak_rss, rss), max(peak_pss, pss), max(peak_mem, mem)
            max_procs = max(max_procs, n)
            trace.append((round(time.monotonic() - started, 1), round(mem / 2**20)))
            time.sleep(0.1)
        output = proc.stdout.read()
        wall = time.monotonic() - started
    tokens = re.search(r"tokens: (\d+)", output)
    row = {
        "date": time.strftime("%Y-%m-%d"),
        "tokens_requested": args.tokens,
        "tokens": int(tokens.group(1)) if tokens else None,
        "input_bytes": n_bytes,
        "one_document": args.one_document,
        "workers": args.workers,
        "flags": list(args.flags),
        "repo": args.repo,
        "peak_mem_mb": round(peak_mem / 2**20),
        "peak_rss_mb": round(peak_rss / 2**20),
        "peak_pss_mb": round(peak_pss / 2**20),
        "processes": max_procs,
        "wall_s": round(wall, 1),
        "rc": proc.returncode,
    }
    if args.trace:
        row["trace"] = trace[:: max(1, len(trace) // 60)]  # about 60 points: where in the run the peak is
    if proc.returncode != 0 or tokens is None:
        row["output_tail"] = output[-2000:]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=50_000, help="about this many tokens of input")
    parser.add_argument("--workers", type=int, default=1, help="SDK worker processes (multi_processing when > 1)")
    parser.add_argument("--one_document", action="store_true", help="the whole input as a single document")
    parser.add_argument(
        "--repo",
        default=str(REPO),
        help="run the pipeline code of this checkout (e.g. a `git archive HEAD` copy, so that edits in progress "
        "do not change the run); the sample is always read from this script's repository",
    )
    parser.add_argument("--trace", action="store_true", help="include ~60 (seconds, MiB) samples of the run")
    parser.add_argument("--out", default=None, help="append the result (one JSON line) to this file")
    parser.add_argument("flags", nargs="*", help="more pipeline flags, after --")
    args = parser.parse_args()
    row = measure(args)
    line = json.dumps(row)
    print(line, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
