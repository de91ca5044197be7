"""The end of a run: counts that reconcile, ``manifest.json``, then ``_SUCCESS``.

Commit protocol (docs/pipeline.md): the launcher deletes ``<run_dir>/_SUCCESS`` and then everything else under
the run directory before the job starts; the writes go to fixed shard names (Beam stages them under
``beam-temp-*`` and renames them into place when all are written); once every write is finalized, this step
removes staging leftovers, checks that the run directory holds exactly the outputs, and writes ``manifest.json``
and then ``_SUCCESS``. A run that fails or is killed before that has no ``_SUCCESS``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import apache_beam as beam

from transforms.files import TEMP_DIR_MARK, delete_files, list_tree, write_text
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
    """Writes ``<run_dir>/manifest.json`` (``base`` + counts + output files), then ``<run_dir>/_SUCCESS``.

    First checks the run directory: Beam's staging leftovers (``beam-temp-*``) are deleted; a missing output or
    any other file that is not an output (another writer in the same run directory) fails the run, before
    anything claims success.
    """
    _check_run_dir(run_dir, outputs)
    totals = {name: int(counts.get(name, 0)) for name in COUNT_NAMES}
    manifest = dict(base)
    manifest["counts"] = totals
    manifest["reconciled"] = totals["documents_read"] == totals["documents_embedded"] + totals["documents_failed"]
    manifest["outputs"] = sorted(_relative(path, run_dir) for path in outputs)
    path = run_dir.rstrip("/") + "/manifest.json"
    write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    write_text(run_dir.rstrip("/") + "/_SUCCESS", "")
    return path


def _check_run_dir(run_dir: str, outputs: list[str]) -> None:
    present = list_tree(run_dir)
    leftovers = [p for p in present if TEMP_DIR_MARK in p]
    delete_files(leftovers, f"deleting staging leftovers under {run_dir}")
    present_set = {_normal(p) for p in present if p not in leftovers}
    expected = {_normal(p) for p in outputs}
    missing = sorted(expected - present_set)
    unexpected = sorted(present_set - expected - {_normal(f"{run_dir.rstrip('/')}/manifest.json")})
    if missing or unexpected:
        raise RuntimeError(
            f"not committing {run_dir}: missing outputs {missing[:5]}, unexpected files {unexpected[:5]} "
            "(is another run writing the same run id?)"
        )


def _normal(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


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
