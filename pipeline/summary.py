"""The end-of-run report: counts from the manifest, padding and throughput from the metrics."""

from __future__ import annotations

import json
from typing import Any

from apache_beam.metrics.metric import MetricsFilter

from transforms.files import read_text
from transforms.metrics import NAMESPACE


def counter_totals(result) -> dict[str, int]:
    """The pipeline's own Beam counters (committed values; attempted where the runner has no committed ones)."""
    totals: dict[str, int] = {}
    metrics = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    for c in metrics["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + int(value or 0)
    return totals


def summarize(run_dir: str, result, seconds: float) -> dict[str, Any]:
    """Reads the run's manifest back and joins the metrics: counts, tokens/s, padding ratio."""
    manifest = json.loads(read_text(run_dir.rstrip("/") + "/manifest.json"))
    counters = counter_totals(result)
    counts = manifest["counts"]
    slots = counters.get("batch_token_slots", 0)
    return {
        "run_dir": run_dir,
        "counts": counts,
        "reconciled": manifest["reconciled"],
        "seconds": seconds,
        "tokens_per_s": counts["tokens"] / seconds if seconds > 0 else 0.0,
        "padding_ratio": counters.get("padding_token_slots", 0) / slots if slots else 0.0,
        "batches": counters.get("batches", 0),
        "fingerprint": manifest["model"]["fingerprint"],
        "counters": counters,
        "previous_run": manifest.get("previous_run"),
    }


def format_summary(s: dict[str, Any]) -> str:
    """A few human lines."""
    c = s["counts"]
    return "\n".join(
        [
            f"ELMo embeddings written to {s['run_dir']}/ (manifest.json, _SUCCESS)",
            f"  documents: {c['documents_read']} read = {c['documents_embedded']} embedded + "
            f"{c['documents_failed']} failed (see errors/)" + ("" if s["reconciled"] else "  NOT RECONCILED"),
            f"  sentences: {c['sentences']}, tokens: {c['tokens']}, windows: {c['windows']}, batches: {s['batches']}",
            f"  {s['tokens_per_s']:.0f} tokens/s over {s['seconds']:.1f} s wall clock (incl. start-up); "
            f"padding {100 * s['padding_ratio']:.1f}% of batch token slots",
            f"  model fingerprint {s['fingerprint']}",
            *_nightly_lines(s),
        ]
    )


def _nightly_lines(s: dict[str, Any]) -> list[str]:
    """What a run given a previous run reused, re-embedded and deleted."""
    previous = s.get("previous_run")
    if not previous:
        return []
    c = s["counts"]
    return [
        f"  previous run {previous['run_dir']}: {previous['mode']} ({previous['note']})",
        f"  sentences: {c['sentences_embedded']} embedded + {c['sentences_carried']} carried over, "
        f"{c['sentences_deleted']} deleted (vertex-delta/)",
        f"  documents: {c['documents_new']} new, {c['documents_changed']} changed, {c['documents_unchanged']} "
        f"unchanged, {c['documents_deleted']} deleted",
    ]
