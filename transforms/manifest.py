"""The end of a run: counts that reconcile, ``manifest.json``, then ``_SUCCESS``.

Commit protocol (docs/pipeline.md): the launcher claims the run directory (``_OWNER``, ``transforms.run_folder``)
and deletes an earlier attempt's files, ``_SUCCESS`` first; the writes go to fixed shard names (Beam stages them
under ``beam-temp-*`` and renames them into place when all are written); once every write is finalized, this step
removes staging leftovers, checks that the run directory holds exactly the outputs, that the failed fraction is
within ``--max_failed_fraction`` and that this run still owns the directory, writes ``manifest.json`` and then
``_SUCCESS``, and releases the claim. A run that fails or is killed before that has no ``_SUCCESS``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import apache_beam as beam

from transforms.files import TEMP_DIR_MARK, list_tree, write_text
from transforms.latest import record_run
from transforms.records import DocumentStats
from transforms.run_folder import MANIFEST_FILE, OWNER_FILE, SUCCESS_FILE, check_owner, delete_our_files, release

COUNT_NAMES = ("documents_read", "documents_embedded", "documents_failed", "sentences", "tokens", "windows")
# A run given a previous run (transforms.incremental) also counts what changed.
CHANGE_COUNT_NAMES = (
    "sentences_embedded",
    "sentences_carried",
    "sentences_deleted",
    "documents_new",
    "documents_changed",
    "documents_unchanged",
    "documents_deleted",
)


def stats_counts(stats: DocumentStats) -> list[tuple[str, int]]:
    """One embedded document's contribution to the counts."""
    return [
        ("documents_embedded", 1),
        ("sentences", stats.sentences),
        ("sentences_embedded", stats.sentences - stats.carried),
        ("sentences_carried", stats.carried),
        ("tokens", stats.tokens),
        ("windows", stats.windows),
    ]


class CountOutcomes(beam.PTransform):
    """{'documents': PCollection[Document], 'read_errors': PCollection[dict], 'stats': PCollection[DocumentStats],
    'failed': PCollection[dict], optional 'changes': PCollection[tuple[str, int]]}
    -> PCollection[tuple[str, int]]: one (name, total) per non-zero count.

    ``documents`` + ``read_errors`` are the documents as read (parsed ones and lines that failed to parse);
    ``changes`` are a nightly run's document statuses and deleted sentences, already as (name, n).
    """

    def expand(self, inputs: dict[str, Any]):
        parts = [
            inputs["documents"] | "ReadCount" >> beam.Map(lambda _: ("documents_read", 1)),
            inputs["read_errors"] | "ReadErrorCount" >> beam.Map(lambda _: ("documents_read", 1)),
            inputs["stats"] | "StatsCounts" >> beam.FlatMap(stats_counts),
            inputs["failed"] | "FailedCount" >> beam.Map(lambda _: ("documents_failed", 1)),
        ]
        if "changes" in inputs:
            parts.append(inputs["changes"])
        return parts | "AllCounts" >> beam.Flatten() | "Sum" >> beam.CombinePerKey(sum)


class TooManyFailuresError(RuntimeError):
    """More documents failed than ``--max_failed_fraction`` allows: the run is not committed."""


def check_failed_fraction(totals: dict[str, int], max_failed_fraction: float) -> None:
    """Raises ``TooManyFailuresError`` when ``documents_failed / documents_read`` exceeds the threshold."""
    read, failed = totals["documents_read"], totals["documents_failed"]
    if read and failed / read > max_failed_fraction:
        raise TooManyFailuresError(
            f"{failed} of {read} documents failed ({100 * failed / read:.1f}% > --max_failed_fraction="
            f"{max_failed_fraction:g}): not committing; errors/ lists every failure and its reason"
        )


def write_manifest(
    run_dir: str,
    base: dict[str, Any],
    counts: dict[str, int],
    outputs: list[str],
    owner_token: str,
    max_failed_fraction: float = 1.0,
    record_latest: tuple[str, str, str] | None = None,
) -> str:
    """Writes ``<run_dir>/manifest.json`` (``base`` + counts + output files), then ``<run_dir>/_SUCCESS``, then
    releases the run directory (``_OWNER``).

    First checks that ``owner_token`` still owns the run directory, then the directory itself: Beam's staging
    leftovers (``beam-temp-*``) are deleted; a missing output or any other file that is not an output (another
    writer in the same run directory) fails the run, as do too many failed documents, before anything claims
    success. A dated run (``record_latest``: output, run date, fingerprint) then records itself in
    ``<output>/LATEST``, which moves only forward in date.
    """
    check_owner(run_dir, owner_token)  # first: a run that lost its folder touches nothing there
    _check_run_dir(run_dir, outputs)
    totals = {name: int(counts.get(name, 0)) for name in COUNT_NAMES + CHANGE_COUNT_NAMES}
    check_failed_fraction(totals, max_failed_fraction)
    manifest = dict(base)
    manifest["counts"] = totals
    manifest["reconciled"] = (
        totals["documents_read"] == totals["documents_embedded"] + totals["documents_failed"]
        and totals["sentences"] == totals["sentences_embedded"] + totals["sentences_carried"]
    )
    manifest["outputs"] = sorted(_relative(path, run_dir) for path in outputs)
    path = run_dir.rstrip("/") + "/" + MANIFEST_FILE
    write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    write_text(run_dir.rstrip("/") + "/" + SUCCESS_FILE, "")
    release(run_dir, owner_token)
    if record_latest is not None:  # (output, run_date, fingerprint) of a dated run: only after _SUCCESS
        output, run_date, fingerprint = record_latest
        record_run(output, run_dir, run_date, fingerprint)
    return path


def _check_run_dir(run_dir: str, outputs: list[str]) -> None:
    present = list_tree(run_dir)
    leftovers = [p for p in present if TEMP_DIR_MARK in p]
    delete_our_files(run_dir, leftovers, f"deleting staging leftovers under {run_dir}")
    present_set = {_normal(p) for p in present if p not in leftovers}
    expected = {_normal(p) for p in outputs}
    missing = sorted(expected - present_set)
    markers = {_normal(f"{run_dir.rstrip('/')}/{name}") for name in (MANIFEST_FILE, OWNER_FILE)}
    unexpected = sorted(present_set - expected - markers)
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

    def __init__(
        self,
        run_dir: str,
        base: dict[str, Any],
        owner_token: str,
        max_failed_fraction: float = 1.0,
        record_latest: tuple[str, str, str] | None = None,
    ):
        super().__init__()
        self._record_latest = record_latest
        self._run_dir = run_dir
        self._base = base
        self._owner_token = owner_token
        self._max_failed_fraction = max_failed_fraction

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
                owner_token=self._owner_token,
                max_failed_fraction=self._max_failed_fraction,
                record_latest=self._record_latest,
            )
        )
