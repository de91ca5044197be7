"""Benchmark worker for OUR implementation (the ``elmo`` package); run with the project's venv python.

    .venv/bin/python bench/ours_worker.py --options O --weights W --sentences S.json --threads 2 [--mode bit-exact]

Zero initial LSTM state for every batch (``initial_state="zeros"``, not stateful), CPU, float32 unless
``--dtype float64``. ``--mode``: ``default``, ``bit-exact`` or ``bf16`` (forced even where the API refuses it as
slower, so that its error and speed can be shown). The token cache is emptied before every pass (each pass starts
cold; its hit rate is reported), unless ``--token-cache-size 0`` turns it off. The LSTM part is timed separately, and
the GEMM peak at the step shapes is measured right after each pass (best of 5 rounds); reported: medians over the
timed passes of the LSTM's GFLOP/s, of the peak and of their per-pass ratio, and the LSTM's time against its own
GEMMs replayed alone with the pass's exact shapes (``replay_gemms``). ``--gemm-peak no`` skips the peak and the
replay, so that a whole-process timing holds only the embedding work.
"""

from __future__ import annotations

import statistics
import time

from elmo.env_settings import env_choice
from elmo.malloc import pause_collector_while_command_imports

# As every elmo entry point does (elmo.malloc): `python -m elmo.embed` imports with the cycle collector paused,
# and freezes what it imported before it works. ELMO_BENCH_GC_FREEZE=no measures without both.
GC_FREEZE = env_choice("ELMO_BENCH_GC_FREEZE", ("yes", "no")) == "yes"
if GC_FREEZE:
    pause_collector_while_command_imports("elmo.embed")

from worker_common import build_parser, run_worker, set_threads, torch_dtype  # noqa: E402

MODES = ("default", "bit-exact", "bf16")


def lstm_flops(layers, active_rows: list[int]) -> int:
    """Multiply-adds x 2 of one layer pair (both directions) over packed rows: input, step and projection GEMMs."""
    first = layers[0]
    rows = sum(active_rows)
    per_row = first.input_dim * 4 * first.cell_dim + first.projection.shape[1] * 4 * first.cell_dim
    per_row += first.cell_dim * first.projection.shape[1]
    return 2 * 2 * rows * per_row


def gemm_dtype(model):
    """The operand type of the LSTM's GEMMs in the model's current arithmetic (bfloat16 in the bf16 mode)."""
    import torch

    return torch.bfloat16 if model.bilm.arithmetic.bf16 else torch.float32


def gemm_peak(model, rows: int, repeats: int = 20, rounds: int = 5) -> float:
    """GFLOP/s of the LSTM's step GEMMs alone (both directions batched, ``rows`` rows, no elementwise work, operands
    in the mode's GEMM type): the best of ``rounds`` timings of ``repeats`` calls (what this machine reaches at that
    shape at best)."""
    import torch

    layer = model.bilm.directions[0][0]
    p, d = layer.projection.shape[1], layer.cell_dim
    options = {"device": model.device, "dtype": gemm_dtype(model)}
    device = model.device
    hidden_kernel = torch.randn(2, p, 4 * d, **options)
    projection = torch.randn(2, d, p, **options)
    h, cell = torch.randn(2, rows, p, **options), torch.randn(2, rows, d, **options)
    for _ in range(3):
        torch.bmm(h, hidden_kernel), torch.bmm(cell, projection)
    best = float("inf")
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            torch.bmm(h, hidden_kernel)
            torch.bmm(cell, projection)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return repeats * 2 * 2 * rows * (p * 4 * d + d * p) / best / 1e9


def replay_gemms(model, calls: list[tuple], rounds: int = 2) -> float:
    """Seconds of the LSTM's own GEMMs alone, replayed with the exact shapes of one pass (best of ``rounds``).

    ``calls``: per layer-pair call, (input_dim, P, D, N, active_rows). Replayed per call: the input GEMM
    (2, N, in) @ (2, in, 4D) (the bias is added in the step's tail, as the model does), then per step n:
    (2, n, P) @ (2, P, 4D) and (2, n, D) @ (2, D, P), with the mode's operand type (float32, bfloat16 in bf16 mode)
    on the model's device, on random data, without the chunking of the bit-exact mode. The LSTM's time over this is
    what the loop adds to its GEMMs (the elementwise tail, state bookkeeping, Python)."""
    import torch

    device = model.device
    options = {"device": device, "dtype": gemm_dtype(model)}
    operands = {}
    for input_dim, p, d, n_rows, active_rows in calls:
        key = (input_dim, p, d)
        if key not in operands:
            operands[key] = {
                "input_kernel": torch.randn(2, input_dim, 4 * d, **options),
                "hidden_kernel": torch.randn(2, p, 4 * d, **options),
                "projection": torch.randn(2, d, p, **options),
                "rows": 0,
            }
        operands[key]["rows"] = max(operands[key]["rows"], n_rows, max(active_rows, default=0))
    for entry in operands.values():
        input_dim, rows, d = entry["input_kernel"].shape[1], entry["rows"], entry["projection"].shape[1]
        entry["x"] = torch.randn(2, rows, input_dim, **options)
        entry["h"] = torch.randn(2, rows, entry["hidden_kernel"].shape[1], **options)
        entry["c"] = torch.randn(2, rows, d, **options)
    best = float("inf")
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for input_dim, p, d, n_rows, active_rows in calls:
            entry = operands[(input_dim, p, d)]
            torch.bmm(entry["x"][:, :n_rows], entry["input_kernel"])
            for n in active_rows:
                torch.bmm(entry["h"][:, :n], entry["hidden_kernel"])
                torch.bmm(entry["c"][:, :n], entry["projection"])
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    """Loads the model with ``Elmo.load`` and times ``embed_batch_tensor`` (token lists in, layers out)."""
    parser = build_parser(__doc__)
    parser.add_argument("--mode", choices=MODES, default="default")
    parser.add_argument("--token-cache-size", type=int, default=None, help="default: the API's default")
    parser.add_argument(
        "--gemm-peak", choices=("yes", "no"), default="yes", help="no: skip the GEMM peak (whole-process runs)"
    )
    args = parser.parse_args()
    set_threads(args.threads)

    import torch

    import elmo.model as model_module
    from elmo import Elmo
    from elmo.malloc import freeze_imported_objects
    from elmo.model import Arithmetic

    if GC_FREEZE:  # as every elmo entry point does (elmo.cli); also turns the collector back on
        freeze_imported_objects()

    speed = {} if args.token_cache_size is None else {"token_cache_size": args.token_cache_size}
    model = Elmo.load(
        args.options,
        args.weights,
        dtype=torch_dtype(args.dtype),
        initial_state="zeros",
        device=args.device,
        bit_exact=args.mode == "bit-exact",
        **speed,
    )
    if args.mode == "bf16":
        model.bilm.arithmetic = Arithmetic(bf16=True)

    # Per pass: LSTM seconds, and the GEMM peak measured right after that pass (so that a slower or faster spell of
    # this shared machine affects both sides of the ratio alike); FLOPs and largest row count of the last pass.
    timing = {"pass_seconds": [], "pass_peaks": [], "pass_replays": [], "flops": 0, "max_rows": 0, "calls": []}
    run_layer_pair = model_module.run_layer_pair

    def wait() -> None:  # GPU kernels run asynchronously: time them to their end
        if model.device.type == "cuda":
            torch.cuda.synchronize()

    def timed_layer_pair(layers, inputs, active_rows, *rest, **options):
        wait()
        start = time.perf_counter()
        result = run_layer_pair(layers, inputs, active_rows, *rest, **options)
        wait()
        timing["pass_seconds"][-1] += time.perf_counter() - start
        timing["flops"] += lstm_flops(layers, active_rows)
        timing["max_rows"] = max(timing["max_rows"], active_rows[0])
        first = layers[0]
        rows = [n for n in active_rows if n > 0]
        timing["calls"].append((first.input_dim, first.projection.shape[1], first.cell_dim, sum(rows), rows))
        return result

    model_module.run_layer_pair = timed_layer_pair

    def embed_batch(sentences):
        layers, _mask = model.embed_batch_tensor(sentences)  # (L+1, B, T_max, 2P); no grad inside
        return layers

    def peak_after_pass() -> None:
        if args.gemm_peak == "yes" and len(timing["pass_peaks"]) < len(timing["pass_seconds"]):
            timing["pass_peaks"].append(gemm_peak(model, max(timing["max_rows"], 1)))
            timing["pass_replays"].append(replay_gemms(model, timing["calls"]))

    def before_pass():
        peak_after_pass()  # of the pass before (untimed: runs between passes)
        if model.bilm.token_cache is not None:
            model.bilm.token_cache.clear()
            model.bilm.token_cache.reset_stats()
        timing["pass_seconds"].append(0.0)
        timing["flops"] = 0
        timing["calls"] = []

    def report() -> dict:
        peak_after_pass()
        stats = model.cache_stats
        timed = slice(len(timing["pass_seconds"]) - args.iters, None)  # the timed passes, all doing the same work
        gflops = [timing["flops"] / max(seconds, 1e-9) / 1e9 for seconds in timing["pass_seconds"][timed]]
        peaks = timing["pass_peaks"][timed]
        shares = [g / p for g, p in zip(gflops, peaks, strict=True)] if peaks else []
        replays = timing["pass_replays"][timed]
        own = [r / s for r, s in zip(replays, timing["pass_seconds"][timed], strict=True)] if replays else []
        return {
            "cache_hit_rate": stats.hit_rate if model.bilm.token_cache is not None else None,
            "lstm_gflops": statistics.median(gflops) if gflops else None,
            "gemm_peak_gflops": statistics.median(peaks) if peaks else None,
            "lstm_share_of_peak": statistics.median(shares) if shares else None,
            "lstm_share_of_own_gemms": statistics.median(own) if own else None,
        }

    n_params = sum(p.numel() for p in model.bilm.parameters())
    run_worker(args, embed_batch, {"impl": "ours", "params": n_params, "mode": args.mode}, before_pass, report)


if __name__ == "__main__":
    main()
