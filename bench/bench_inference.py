"""CPU inference benchmark: our ELMo (the ``elmo`` package) against AllenNLP 2.10.1's ``_ElmoBiLm``, side by side.

    scripts/install_reference.sh                      # once: AllenNLP 2.10.1 in build/venv-reference
    .venv/bin/python bench/bench_inference.py         # tiny, small, original; 2 and 1 threads
    .venv/bin/python bench/bench_inference.py --configs tiny --threads 2 --iters 3 --batch-sizes

Each implementation runs in a subprocess of its own venv (ours: this python; the reference: ``--reference-python``)
on the same options and weights files, the same sentences in the same batches, the same thread count
(``torch.set_num_threads`` plus OMP/MKL_NUM_THREADS) and a zero initial LSTM state for every batch. A worker does
``--warmup`` untimed passes, then ``--iters`` timed passes; with ``--rounds`` > 1 the two are run alternately
(ABBA order) and the timed passes of all rounds are pooled. tokens/s = tokens / median pass time; load time is not
counted; "ratio by CPU time" uses process CPU seconds instead, which other load on the machine disturbs less. A
|diff| is the largest absolute difference over every layer of every real token (sentence boundaries and padding
excluded). A verdict other than ``ok`` or ``rounding`` is printed as a PARITY FAILURE line and makes the exit status 1.

Input: 64 deterministic sentences, 1,283 tokens in all, cut from the token stream of the golden fixture's
sentences. Configs: ``tiny`` is the golden fixture model (real weights); ``small`` and ``original`` have the
published shapes with random weights ~ N(0, 0.05). All are written to a temporary directory with their LSTM
biases rounded to multiples of 2^-20 (see ``LSTM_BIAS_GRID``), so that the float64 comparison is exact.

Parity columns: float32 |diff| between the two; float64 |diff| between the two (once per config, batch 64); and
"float32 noise", ours in float32 against ours in float64, i.e. how far float32 rounding alone moves the output of
this model. The verdict is ``ok`` (float32 within ``--tolerance``), ``rounding`` (float32 over it but within 3x the
float32 noise, float64 within ``--tolerance64``) or ``MISMATCH``; with ``--no-float64`` a float32 |diff| over the
tolerance is ``OVER TOLERANCE``, as nothing can then tell rounding from mismatch.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from elmo import published_config
from elmo.weights import expected_datasets

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
FIXTURE = REPO / "tests" / "fixtures" / "elmo-golden" / "skip"
DEFAULT_REFERENCE_PYTHON = REPO / "build" / "venv-reference" / "bin" / "python"
CONFIGS = ("tiny", "small", "original")
RANDOM_WEIGHT_STD = 0.05
# LSTM biases (random ones and the tiny fixture's) are rounded to multiples of 2^-20 so that bias + 1 (the forget
# bias) is exact in float32: AllenNLP adds the 1 to the float32 array at load time, ours in the model's dtype.
# Without this the float64 comparison would measure that one rounding (about 1e-8 per bias; measured 2.7e-5 on the
# outputs of the original config) instead of the two implementations (5e-12 with it).
LSTM_BIAS_GRID = 2.0**-20


@dataclass
class Model:
    """A model both workers can load: its files and its parameter count (from the weights file)."""

    name: str
    options: Path
    weights: Path
    params: int


@dataclass
class Timing:
    """Pooled timed passes of one implementation on one case: wall-clock and process CPU seconds."""

    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    tokens: int = 0
    threads: int = 0

    @property
    def tokens_per_s(self) -> float:
        """Tokens per wall-clock second of the median pass."""
        return self.tokens / statistics.median(self.seconds)

    @property
    def median_cpu_s(self) -> float:
        """Process CPU seconds of the median pass (all threads); less sensitive to other load than wall time."""
        return statistics.median(self.cpu_seconds)


@dataclass
class Parity:
    """How far the two implementations' outputs are apart on one case, and how far float32 rounding reaches."""

    diff32: float  # max |ours - ref|, both float32
    max_abs_ref: float  # scale of the outputs
    diff64: float | None = None  # max |ours - ref|, both float64 (batch 64 only)
    noise32: float | None = None  # max |ours float32 - ours float64|: float32 rounding after the recurrence

    def verdict(self, tolerance: float, tolerance64: float) -> str:
        """``ok``; ``rounding`` (over ``tolerance`` in float32, but equal in float64 where that was run, and within
        3x float32's own error on this model); ``MISMATCH``; or ``OVER TOLERANCE`` when float32 is over the
        tolerance and no float64 run can tell which of the two it is."""
        if self.diff64 is not None and self.diff64 > tolerance64:
            return "MISMATCH"
        if self.diff32 <= tolerance:
            return "ok"
        if self.noise32 is None:
            return "OVER TOLERANCE (no float64 run to tell rounding from mismatch)"
        if self.diff32 <= 3 * self.noise32:
            return "rounding"
        return "MISMATCH"


@dataclass
class Row:
    """One line of a result table."""

    model: Model
    batch_size: int
    threads: int
    ours: Timing
    ref: Timing
    parity: Parity
    outputs: dict[str, Path]  # float32 outputs of each side

    @property
    def ratio(self) -> float:
        """Throughput of ours over the reference's, wall clock."""
        return self.ours.tokens_per_s / self.ref.tokens_per_s

    @property
    def cpu_ratio(self) -> float:
        """The same ratio from process CPU time."""
        return self.ref.median_cpu_s / self.ours.median_cpu_s


def make_sentences(n_sentences: int = 64, n_tokens: int = 1283, seed: int = 0) -> list[list[str]]:
    """``n_sentences`` sentences with ``n_tokens`` tokens in all, cut from the fixture's sentences.

    The fixture's tokens form one stream (repeated as needed); sentence lengths are drawn from a seeded RNG around
    the mean length and then adjusted to add up to exactly ``n_tokens``. Same arguments, same sentences.
    """
    with open(FIXTURE / "sentences.json", encoding="utf-8") as f:
        stream = [token for group in json.load(f) for sentence in group for token in sentence.split()]
    rng = random.Random(seed)
    mean = n_tokens / n_sentences
    lengths = [max(1, round(rng.gauss(mean, mean / 2))) for _ in range(n_sentences)]
    while sum(lengths) != n_tokens:  # nudge random sentences until the total is exact
        i = rng.randrange(n_sentences)
        if sum(lengths) > n_tokens and lengths[i] > 1:
            lengths[i] -= 1
        elif sum(lengths) < n_tokens:
            lengths[i] += 1
    sentences, position = [], 0
    for length in lengths:
        sentences.append([stream[(position + k) % len(stream)] for k in range(length)])
        position += length
    return sentences


def write_random_model(name: str, directory: Path, seed: int = 0, std: float = RANDOM_WEIGHT_STD) -> Model:
    """Writes options.json and a weights file of published shape ``name`` with weights ~ N(0, std)."""
    config = published_config(name)
    options, weights = directory / f"{name}.options.json", directory / f"{name}.weights.hdf5"
    options.write_text(config.to_json(), encoding="utf-8")
    rng = np.random.default_rng(seed)
    shapes = expected_datasets(config)
    with h5py.File(weights, "w") as f:
        for dataset, shape in shapes.items():
            values = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
            f[dataset] = _on_bias_grid(values) if _is_lstm_bias(dataset) else values
    return Model(name, options, weights, sum(math.prod(s) for s in shapes.values()))


def fixture_model(directory: Path) -> Model:
    """The golden fixture's tiny model (real trained weights), copied with its LSTM biases on the 2^-20 grid."""
    return grid_copy("tiny", FIXTURE / "options.json", FIXTURE / "lm_weights.hdf5", directory)


def grid_copy(name: str, options_source: Path, weights_source: Path, directory: Path) -> Model:
    """A copy of a trained model's files in ``directory``, its LSTM biases rounded to the 2^-20 grid."""
    options, weights = directory / f"{name}.options.json", directory / f"{name}.weights.hdf5"
    options.write_text(options_source.read_text(encoding="utf-8"), encoding="utf-8")
    params = 0
    with h5py.File(weights_source, "r") as source, h5py.File(weights, "w") as target:
        for dataset, values in _datasets(source):
            target[dataset] = _on_bias_grid(values) if _is_lstm_bias(dataset) else values
            params += values.size
    return Model(name, options, weights, params)


def _datasets(f: h5py.File) -> list[tuple[str, np.ndarray]]:
    """Every dataset of an HDF5 file: (path, values)."""
    found: list[tuple[str, np.ndarray]] = []
    f.visititems(lambda name, item: found.append((name, item[...])) if isinstance(item, h5py.Dataset) else None)
    return found


def _is_lstm_bias(name: str) -> bool:
    return name.startswith("RNN_") and name.endswith("/B")


def _on_bias_grid(values: np.ndarray) -> np.ndarray:
    """Rounds to multiples of ``LSTM_BIAS_GRID`` (a change of at most 2^-21, about 5e-7), as float32."""
    return (np.round(values.astype(np.float64) / LSTM_BIAS_GRID) * LSTM_BIAS_GRID).astype(np.float32)


def run_worker(
    impl: str, model: Model, sentences_path: Path, threads: int, batch_size: int, args, out: Path | None, **extra
) -> dict:
    """Runs one worker process (``impl`` is ``ours`` or ``ref``) and returns its parsed result line."""
    python, script = (
        (args.ours_python, "ours_worker.py") if impl == "ours" else (args.reference_python, "reference_worker.py")
    )
    options = {
        "options": model.options,
        "weights": model.weights,
        "sentences": sentences_path,
        "threads": threads,
        "batch-size": batch_size,
        "warmup": args.warmup,
        "iters": args.iters,
        **extra,
    }
    if out is not None:
        options["out"] = out
    command = [python, str(BENCH / script)] + [f"--{key}={value}" for key, value in options.items()]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise RuntimeError(f"worker failed (exit {done.returncode}): {' '.join(command)}")
    result = json.loads(lines[-1][len("RESULT ") :])
    if impl == "ref":
        args.torchvision_note = result.get("torchvision", args.torchvision_note)
    if args.verbose:
        print(f"  {model.name} b={batch_size} t={threads} {impl} {extra}: {result['seconds']}", file=sys.stderr)
    return result


def max_abs_diff(a: np.ndarray, b: np.ndarray, what: str) -> float:
    """Largest absolute difference of two output arrays, computed in float64."""
    if a.shape != b.shape:
        raise RuntimeError(f"{what}: output shapes differ, {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def measure(model: Model, sentences_path: Path, threads: int, batch_size: int, args, scratch: Path) -> Row:
    """Both implementations on one case, ``args.rounds`` rounds in ABBA order, then the float32 parity check."""
    timings = {"ours": Timing(), "ref": Timing()}
    outputs = {impl: scratch / f"{model.name}-b{batch_size}-t{threads}-{impl}-f32.npy" for impl in timings}
    for round_index in range(args.rounds):
        for impl in ("ref", "ours") if round_index % 2 == 0 else ("ours", "ref"):
            out = outputs[impl] if round_index < 2 else None  # each side dumps its outputs once
            result = run_worker(impl, model, sentences_path, threads, batch_size, args, out)
            timing = timings[impl]
            timing.seconds += result["seconds"]
            timing.cpu_seconds += result["cpu_seconds"]
            timing.tokens, timing.threads = result["tokens"], result["threads"]
    ours, ref = np.load(outputs["ours"]), np.load(outputs["ref"])
    parity = Parity(max_abs_diff(ours, ref, model.name), float(np.max(np.abs(ref))))
    return Row(model, batch_size, threads, timings["ours"], timings["ref"], parity, outputs)


def add_float64_parity(row: Row, sentences_path: Path, args, scratch: Path) -> None:
    """Runs both sides once more in float64 (no timing) and fills ``diff64`` and ``noise32`` of ``row.parity``."""
    outputs = {impl: scratch / f"{row.model.name}-b{row.batch_size}-{impl}-f64.npy" for impl in ("ours", "ref")}
    for impl, out in outputs.items():
        run_worker(
            impl, row.model, sentences_path, row.threads, row.batch_size, args, out, dtype="float64", warmup=0, iters=0
        )
    ours64, ref64 = np.load(outputs["ours"]), np.load(outputs["ref"])
    row.parity.diff64 = max_abs_diff(ours64, ref64, row.model.name)
    row.parity.noise32 = max_abs_diff(np.load(row.outputs["ours"]), ours64, row.model.name)


def format_table(rows: list[Row], with_batch: bool, args) -> str:
    """The markdown table of ``rows``."""
    head = ["config", "params"] + (["batch"] if with_batch else []) + ["threads", "ours tokens/s", "AllenNLP tokens/s"]
    head += ["ratio (ours/ref)", "ratio by CPU time", "max \\|diff\\| ours vs ref (float32)"]
    if not with_batch:
        head += ["max \\|diff\\| float64", "float32 noise (ours f32 vs f64)"]
    head += ["max \\|ref\\|", "parity"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        p = row.parity
        cells = [row.model.name, f"{row.model.params / 1e6:.2f}M"] + ([str(row.batch_size)] if with_batch else [])
        cells += [str(row.threads), f"{row.ours.tokens_per_s:,.0f}", f"{row.ref.tokens_per_s:,.0f}"]
        cells += [f"{row.ratio:.2f}", f"{row.cpu_ratio:.2f}", f"{p.diff32:.2e}"]
        if not with_batch:
            cells += [_maybe(p.diff64), _maybe(p.noise32)]
        cells += [f"{p.max_abs_ref:.2f}", p.verdict(args.tolerance, args.tolerance64)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def check_threads(rows: list[Row]) -> None:
    """Both workers must really have run with the thread count asked for."""
    for row in rows:
        if not row.ours.threads == row.ref.threads == row.threads:
            raise RuntimeError(
                f"thread counts differ: asked {row.threads}, ours {row.ours.threads}, ref {row.ref.threads}"
            )


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS), help="models to run")
    parser.add_argument("--threads", nargs="+", type=int, default=[2, 1], help="torch thread counts to run")
    parser.add_argument("--iters", type=int, default=5, help="timed passes per worker run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes per worker run")
    parser.add_argument("--rounds", type=int, default=2, help="worker runs per implementation, alternated ABBA")
    parser.add_argument(
        "--batch-sizes",
        nargs="*",
        type=int,
        default=[1, 16, 64],
        help="batch sizes of the second table (on --batch-config); none to skip it",
    )
    parser.add_argument("--batch-config", choices=CONFIGS, default="small", help="model of the batch-size table")
    parser.add_argument("--batch-threads", type=int, help="thread count of the batch-size table (first of --threads)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest float32 |diff| taken as parity")
    parser.add_argument("--tolerance64", type=float, default=1e-9, help="largest float64 |diff| taken as parity")
    parser.add_argument("--no-float64", action="store_true", help="skip the float64 parity runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sentences and of the random weights")
    parser.add_argument("--ours-python", default=sys.executable, help="python of the project's venv")
    parser.add_argument(
        "--reference-python",
        default=os.environ.get("REFERENCE_PYTHON", str(DEFAULT_REFERENCE_PYTHON)),
        help="python of the AllenNLP venv (scripts/install_reference.sh)",
    )
    parser.add_argument("--verbose", action="store_true", help="print every worker's pass times to stderr")
    return parser


def describe_machine() -> str:
    """CPU, core count and load, so that a reader can judge the noise."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{cpu}; {os.cpu_count()} logical CPUs; load average {load}"


def main(argv: list[str] | None = None) -> int:
    """Prepares the models and sentences, runs every case and prints the tables."""
    args = build_parser().parse_args(argv)
    args.torchvision_note = "not run"
    if not Path(args.reference_python).exists():
        print(f"no reference python at {args.reference_python}: run scripts/install_reference.sh", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    print(f"# ELMo CPU inference: ours vs AllenNLP 2.10.1 _ElmoBiLm ({started})")
    print(f"machine at start: {describe_machine()}")
    sentences = make_sentences(seed=args.seed)
    n_tokens = sum(len(s) for s in sentences)
    print(
        f"input: {len(sentences)} sentences, {n_tokens} tokens; zero initial state per batch; "
        f"{args.warmup} warm-up + {args.iters} timed passes x {args.rounds} rounds per implementation (ABBA), "
        "median pass time"
    )
    with tempfile.TemporaryDirectory(prefix="elmo-bench-") as tmp:
        scratch = Path(tmp)
        sentences_path = scratch / "sentences.json"
        sentences_path.write_text(json.dumps(sentences), encoding="utf-8")
        models: dict[str, Model] = {}

        def model(name: str) -> Model:
            if name not in models:
                models[name] = (
                    fixture_model(scratch) if name == "tiny" else write_random_model(name, scratch, args.seed)
                )
            return models[name]

        rows = [measure(model(c), sentences_path, t, 64, args, scratch) for c in args.configs for t in args.threads]
        if not args.no_float64:
            first_rows = {row.model.name: row for row in reversed(rows)}
            for row in first_rows.values():
                add_float64_parity(row, sentences_path, args, scratch)
            for row in rows:
                row.parity.diff64 = first_rows[row.model.name].parity.diff64
                row.parity.noise32 = first_rows[row.model.name].parity.noise32
        check_threads(rows)
        print(f"\n## Batch of {len(sentences)} sentences\n")
        print(format_table(rows, with_batch=False, args=args))
        batch_rows = []
        if args.batch_sizes:
            threads = args.batch_threads or args.threads[0]
            batch_rows = [
                measure(model(args.batch_config), sentences_path, threads, b, args, scratch) for b in args.batch_sizes
            ]
            noise = {row.model.name: row.parity.noise32 for row in rows}
            for row in batch_rows:
                row.parity.noise32 = noise.get(row.model.name)
            check_threads(batch_rows)
            print(f"\n## Batch size ({args.batch_config}; the same {len(sentences)} sentences, in order)\n")
            print(format_table(batch_rows, with_batch=True, args=args))
    print(f"\nreference torchvision: {args.torchvision_note}")
    print(f"machine at end: {describe_machine()}")
    verdicts = [(row, row.parity.verdict(args.tolerance, args.tolerance64)) for row in rows + batch_rows]
    failures = [row for row, verdict in verdicts if verdict not in ("ok", "rounding")]
    for row in failures:
        p = row.parity
        message = (
            f"PARITY FAILURE: {row.model.name} batch {row.batch_size} threads {row.threads}: max |diff| float32 "
            f"{p.diff32:.3e} (tolerance {args.tolerance:.0e}), float64 {_maybe(p.diff64)} "
            f"(tolerance {args.tolerance64:.0e}), float32 noise {_maybe(p.noise32)}"
        )
        print(message)
        print(message, file=sys.stderr)
    if not failures:
        print(f"parity: no mismatch (float32 tolerance {args.tolerance:.0e}, float64 {args.tolerance64:.0e})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
