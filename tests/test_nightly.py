"""Nightly re-embedding (issue 13): a day-2 run given day 1 embeds only new and edited sentences, carries the rest
by content key, lists the deleted ids, equals a full day-2 run, and moves ``LATEST`` only forward after
``_SUCCESS``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from elmo.errors import UsageError
from tests.beam_testing import (
    restore_torch_threads,  # noqa: F401  (autouse fixture)
    run_job_summary,
)


def rows(run_dir: Path) -> dict[str, dict]:
    """id -> the row (without vectors) and its sentence vector, from every Parquet shard of a run."""
    table = pa.concat_tables(pq.read_table(f) for f in sorted((run_dir / "sentences").glob("*.parquet")))
    vectors = np.asarray(table.column("sentence_vector").combine_chunks().flatten()).reshape(table.num_rows, -1)
    columns = ["id", "doc_id", "key", "text", "source", "line", "char_start", "char_end", "tokens", "token_starts"]
    out = {}
    for row, vector in zip(table.select(columns).to_pylist(), vectors, strict=True):
        out[row["id"]] = {**row, "vector": vector}
    return out


def test_day2_embeds_only_new_and_edited_sentences_and_equals_a_full_run(nightly_runs):
    day1, day2, full = (rows(Path(nightly_runs[k]["run_dir"])) for k in ("day1", "day2", "full"))
    assert set(day2) == set(full)
    for sid, row in full.items():  # the same rows: ids, texts, offsets; vectors within float32 rounding
        mine = day2[sid]
        assert {k: v for k, v in mine.items() if k != "vector"} == {k: v for k, v in row.items() if k != "vector"}
        assert np.abs(mine["vector"] - row["vector"]).max() <= 1e-4
    new_keys = {row["key"] for row in full.values()} - {row["key"] for row in day1.values()}
    counts = nightly_runs["day2"]["counts"]
    assert counts["sentences_embedded"] == sum(1 for row in full.values() if row["key"] in new_keys) > 0
    assert counts["sentences_carried"] == len(full) - counts["sentences_embedded"]
    assert counts["sentences_embedded"] < len(full) / 5  # only the edits and additions
    assert nightly_runs["day2"]["reconciled"]


def test_deleted_ids_and_the_delta_for_a_vector_index(nightly_runs):
    day1, full = rows(Path(nightly_runs["day1"]["run_dir"])), rows(Path(nightly_runs["full"]["run_dir"]))
    run_dir = Path(nightly_runs["day2"]["run_dir"])
    deleted = (run_dir / "vertex-delta" / "delete" / "part-00000-of-00001.txt").read_text().split()
    assert sorted(deleted) == sorted(set(day1) - set(full))
    assert nightly_runs["day2"]["counts"]["sentences_deleted"] == len(deleted)
    upserts = [json.loads(line) for line in (run_dir / "vertex-delta" / "part-00000-of-00001.json").open()]
    changed = {sid for sid, row in full.items() if sid not in day1 or day1[sid]["key"] != row["key"]}
    assert {u["id"] for u in upserts} == changed
    counts = nightly_runs["day2"]["counts"]
    docs1, docs2 = {r["doc_id"] for r in day1.values()}, {r["doc_id"] for r in full.values()}
    assert counts["documents_new"] == len(docs2 - docs1) and counts["documents_deleted"] == len(docs1 - docs2)
    assert counts["documents_new"] + counts["documents_changed"] + counts["documents_unchanged"] == len(docs2)
    assert counts["documents_unchanged"] > len(docs2) / 2


def test_latest_moves_forward_only_and_a_rerun_of_day2_gives_the_same_folder(nightly_runs, tmp_path):
    out = shutil.copytree(nightly_runs["out"], tmp_path / "out")  # the shared runs stay as they are
    latest = json.loads((out / "LATEST").read_text())
    assert latest["run_date"] == "2026-11-02" and latest["run_dir"].endswith("/2026-11-02")
    assert [e["run_date"] for e in latest["history"]] == ["2026-11-02", "2026-11-01"]
    before = rows(Path(nightly_runs["day2"]["run_dir"]))
    flags, day2 = nightly_runs["flags"], f"{nightly_runs['day2_input']}/*"
    again = run_job_summary(out, "--run_date=2026-11-02", "--previous_run=latest", *flags, input_glob=day2)
    assert again["previous_run"]["run_dir"].endswith("/2026-11-01")  # not itself
    assert again["previous_run"]["mode"] == "incremental"
    after = rows(Path(again["run_dir"]))
    assert set(after) == set(before) and all(np.array_equal(after[k]["vector"], before[k]["vector"]) for k in after)
    late = run_job_summary(out, "--run_date=2026-10-31", *flags, input_glob=day2)  # an older day
    assert Path(late["run_dir"]).name == "2026-10-31"
    latest = json.loads((out / "LATEST").read_text())
    assert latest["run_date"] == "2026-11-02"  # not moved back
    assert [e["run_date"] for e in latest["history"]] == ["2026-11-02", "2026-11-01", "2026-10-31"]


def test_another_model_setting_embeds_everything_again(nightly_runs, tmp_path):
    two = run_job_summary(
        tmp_path,
        "--previous_run=" + nightly_runs["day1"]["run_dir"],
        "--layers=top",
        input_glob=f"{nightly_runs['day2_input']}/*",
    )
    assert two["previous_run"]["mode"] == "full" and "layers ('average' -> 'top')" in two["previous_run"]["note"]
    assert two["counts"]["sentences_carried"] == 0
    assert two["counts"]["sentences_embedded"] == two["counts"]["sentences"]


def test_bad_previous_runs_are_refused_before_any_work(nightly_runs, tmp_path):
    good = Path(nightly_runs["day1"]["run_dir"])
    cases = {}
    cases["missing"] = (tmp_path / "nowhere", "no run there")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(good, unfinished)
    (unfinished / "_SUCCESS").unlink()
    cases["unfinished"] = (unfinished, "did not finish")
    old = tmp_path / "old"
    shutil.copytree(good, old)
    manifest = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 1}))
    cases["schema"] = (old, "schema version 1")
    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    (broken / "sentences" / "part-00000-of-00001.parquet").write_bytes(b"not parquet at all")
    cases["parquet"] = (broken, "not readable Parquet")
    for name, (folder, message) in cases.items():
        with pytest.raises(UsageError, match=message):
            run_job_summary(
                tmp_path / f"out-{name}", f"--previous_run={folder}", input_glob=f"{nightly_runs['day2_input']}/*"
            )
        assert not (tmp_path / f"out-{name}").exists()


def test_a_day3_run_that_fails_leaves_latest_on_the_last_good_day(nightly_runs, tmp_path):
    out = shutil.copytree(nightly_runs["out"], tmp_path / "out")  # the shared runs stay as they are
    day3 = tmp_path / "day3"
    shutil.copytree(nightly_runs["day2_input"], day3)
    (day3 / "broken.txt").write_bytes(b"bad \xff utf8\n")  # one failed document: over --max_failed_fraction=0
    with pytest.raises(Exception, match="not committing"):
        run_job_summary(
            out, "--run_date=2026-11-03", "--previous_run=latest", "--max_failed_fraction=0",
            input_glob=f"{day3}/*",
        )  # fmt: skip
    assert not (out / "2026-11-03" / "_SUCCESS").exists()
    assert json.loads((out / "LATEST").read_text())["run_date"] == "2026-11-02"
