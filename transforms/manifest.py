"""The end of a run: counts that reconcile, ``manifest.json``, then ``_SUCCESS``."""

from __future__ import annotations

import json
from typing import Any

import apache_beam as beam

from transforms.files import write_text
from transforms.records import DocumentStats

COUNT_NAMES = ("documents_read", "documents_embedded", "documents_failed", "sentences", "tokens", "windows")


def stats_counts(stats: DocumentStats) -> list[tuple[str, int]]:
    """One embedded document's contribution to the counts."""
    return [
        ("documents_embedded", 1),
        ("sentences", stats.sentences),
        ("tokens", stats.tokens),
        ("windows", stats.windows),
    ]


class CountOutcomes(beam.PTransform):
    """{'documents': PCollection[Document], 'read_errors': PCollection[dict], 'stats': PCollection[DocumentStats],
    'failed': PCollection[dict]} -> PCollection[tuple[str, int]]: one (name, total) per non-zero count.

    ``documents`` + ``read_errors`` are the documents as read (parsed ones and lines that failed to parse).
    """

    def expand(self, inputs: dict[str, Any]):
        parts = [
            inputs["documents"] | "ReadCount" >> beam.Map(lambda _: ("documents_read", 1)),
            inputs["read_errors"] | "ReadErrorCount" >> beam.Map(lambda _: ("documents_read", 1)),
            inputs["stats"] | "StatsCounts" >> beam.FlatMap(stats_counts),
            inputs["failed"] | "FailedCount" >> beam.Map(lambda _: ("documents_failed", 1)),
        ]
        return parts | "AllCounts" >> beam.Flatten() | "Sum" >> beam.CombinePerKey(sum)


def write_manifest(run_dir: str, base: dict[str, Any], counts: dict[str, int], outputs: list[str]) -> str:
    """Writes ``<run_dir>/manifest.json`` (``base`` + counts + output files), then ``<run_dir>/_SUCCESS``."""
    totals = {name: int(counts.get(name, 0)) for name in COUNT_NAMES}
    manifest = dict(base)
    manifest["counts"] = totals
    manifest["reconciled"] = totals["documents_read"] == totals["documents_embedded"] + totals["documents_failed"]
    manifest["outputs"] = sorted(_relative(path, run_dir) for path in outputs)
    path = run_dir.rstrip("/") + "/manifest.json"
    write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    write_text(run_dir.rstrip("/") + "/_SUCCESS", "")
    return path


def _relative(path: str, run_dir: str) -> str:
    prefix = run_dir.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


class WriteManifest(beam.PTransform):
    """{'counts': PCollection[tuple[str, int]], any other key: PCollection[str written file path]}
    -> PCollection[str manifest path].

    Runs once, after every output is written (the written file names arrive as side inputs, which exist only once
    the writes are finalized): writes ``manifest.json`` and then ``_SUCCESS``.
    """

    def __init__(self, run_dir: str, base: dict[str, Any]):
        super().__init__()
        self._run_dir = run_dir
        self._base = base

    def expand(self, inputs: dict[str, Any]):
        outputs = [pcoll for key, pcoll in sorted(inputs.items()) if key != "counts"] | "AllOutputs" >> beam.Flatten()
        return (
            inputs["counts"].pipeline
            | "Once" >> beam.Create([self._run_dir])
            | "Write"
            >> beam.Map(
                write_manifest,
                base=self._base,
                counts=beam.pvalue.AsDict(inputs["counts"]),
                outputs=beam.pvalue.AsList(outputs),
            )
        )
