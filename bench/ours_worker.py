"""Benchmark worker for OUR implementation (the ``elmo`` package); run with the project's venv python.

    .venv/bin/python bench/ours_worker.py --options O --weights W --sentences S.json --threads 2

Zero initial LSTM state for every batch (``initial_state="zeros"``, not stateful), CPU, float32 unless
``--dtype float64``.
"""

from __future__ import annotations

from worker_common import build_parser, run_worker, set_threads, torch_dtype


def main() -> None:
    """Loads the model with ``Elmo.load`` and times ``embed_batch_tensor`` (token lists in, layers out)."""
    args = build_parser(__doc__).parse_args()
    set_threads(args.threads)

    from elmo import Elmo

    model = Elmo.load(args.options, args.weights, dtype=torch_dtype(args.dtype), initial_state="zeros")

    def embed_batch(sentences):
        layers, _mask = model.embed_batch_tensor(sentences)  # (L+1, B, T_max, 2P); no grad inside
        return layers

    n_params = sum(p.numel() for p in model.bilm.parameters())
    run_worker(args, embed_batch, {"impl": "ours", "params": n_params})


if __name__ == "__main__":
    main()
