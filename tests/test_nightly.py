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
    SAMPLE_GLOB,
    restore_torch_threads,  # noqa: F401  (autouse fixture)
    run_job_summary,
)

SAMPLE = Path(SAMPLE_GLOB).parent
EDIT = " Moreover, the committee met on a rainy Tuesday."


def rows(run_dir: Path) -> dict[str, dict]:
    """id -> the row (without vectors) and its sentence vector, from every Parquet shard of a run."""
    table = pa.concat_tables(pq.read_table(f) for f in sorted((run_dir / "sentences").glob("*.parquet")))
    vectors = np.asarray(table.column("sentence_vector").combine_chunks().flatten()).reshape(table.num_rows, -1)
    columns = ["id", "doc_id", "key", "text", "source", "line", "char_start", "char_end", "tokens", "token_starts"]
    out = {}
    for row, vector in zip(table.select(columns).to_pylist(), vectors, strict=True):
        out[row["id"]] = {**row, "vector": vector}
    return out


def day1_corpus(root: Path) -> Path:
    """Day 1: two plain-text shards and a JSON lines shard of the sample (~150 documents)."""
    root.mkdir()
    for name in ("1790-washington.txt", "1801-jefferson.txt", "1862-lincoln.jsonl"):
        shutil.copy(SAMPLE / name, root / name)
    return root


def day2_corpus(day1: Path, root: Path) -> dict[str, int]:
    """Day 2 from day 1: one sentence appended to every 10th document, 2 documents deleted, 2 added, and 2 lines
    inserted at the top of a plain-text shard (so every later line's document id shifts)."""
    shutil.copytree(day1, root)
    washington = (root / "1790-washington.txt").read_text().splitlines()
    edited = [line + EDIT if i % 10 == 3 else line for i, line in enumerate(washington)]
    del edited[5:7]  # two documents deleted
    edited = ["A brand new opening line about railways.", "Another new line, on canals and harbours.", *edited]
    (root / "1790-washington.txt").write_text("\n".join(edited) + "\n")
    lincoln = [json.loads(line) for line in (root / "1862-lincoln.jsonl").read_text().splitlines()]
    lincoln[1]["text"] += EDIT
    lincoln.append({"id": "added-1", "text": "Steam engines crossed the plains. The telegraph hummed."})
    (root / "1862-lincoln.jsonl").write_text("\n".join(json.dumps(d) for d in lincoln) + "\n")
    return {"edited": sum(1 for i in range(len(washington)) if i % 10 == 3) + 1}


@pytest.fixture(scope="module")
def nightly(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("nightly")
    day1 = day1_corpus(root / "day1")
    day2 = root / "day2"
    edits = day2_corpus(day1, day2)
    out = root / "out"
    one = run_job_summary(out, "--run_date=2026-11-01", input_glob=f"{day1}/*")
    two = run_job_summary(out, "--run_date=2026-11-02", "--previous_run=latest", input_glob=f"{day2}/*")
    full = run_job_summary(root / "full", "--run_date=2026-11-02", input_glob=f"{day2}/*")
    return {"root": root, "out": out, "day1": one, "day2": two, "full": full, "edits": edits, "day2_input": day2}


def test_day2_embeds_only_new_and_edited_sentences_and_equals_a_full_run(nightly):
    day1, day2, full = (rows(Path(nightly[k]["run_dir"])) for k in ("day1", "day2", "full"))
    assert set(day2) == set(full)
    for sid, row in full.items():  # the same rows: ids, texts, offsets; vectors within float32 rounding
        mine = day2[sid]
        assert {k: v for k, v in mine.items() if k != "vector"} == {k: v for k, v in row.items() if k != "vector"}
        assert np.abs(mine["vector"] - row["vector"]).max() <= 1e-4
    new_keys = {row["key"] for row in full.values()} - {row["key"] for row in day1.values()}
    counts = nightly["day2"]["counts"]
    assert counts["sentences_embedded"] == sum(1 for row in full.values() if row["key"] in new_keys) > 0
    assert counts["sentences_carried"] == len(full) - counts["sentences_embedded"]
    assert counts["sentences_embedded"] < len(full) / 5  # only the edits and additions
    assert nightly["day2"]["reconciled"]


def test_deleted_ids_and_the_delta_for_a_vector_index(nightly):
    day1, full = rows(Path(nightly["day1"]["run_dir"])), rows(Path(nightly["full"]["run_dir"]))
    run_dir = Path(nightly["day2"]["run_dir"])
    deleted = (run_dir / "vertex-delta" / "delete" / "part-00000-of-00001.txt").read_text().split()
    assert sorted(deleted) == sorted(set(day1) - set(full))
    assert nightly["day2"]["counts"]["sentences_deleted"] == len(deleted)
    upserts = [json.loads(line) for line in (run_dir / "vertex-delta" / "part-00000-of-00001.json").open()]
    changed = {sid for sid, row in full.items() if sid not in day1 or day1[sid]["key"] != row["key"]}
    assert {u["id"] for u in upserts} == changed
    counts = nightly["day2"]["counts"]
    docs1, docs2 = {r["doc_id"] for r in day1.values()}, {r["doc_id"] for r in full.values()}
    assert counts["documents_new"] == len(docs2 - docs1) and counts["documents_deleted"] == len(docs1 - docs2)
    assert counts["documents_new"] + counts["documents_changed"] + counts["documents_unchanged"] == len(docs2)
    assert counts["documents_unchanged"] > len(docs2) / 2


def test_latest_moves_forward_only_and_a_rerun_of_day2_gives_the_same_folder(nightly, tmp_path):
    out = nightly["out"]
    latest = json.loads((out / "LATEST").read_text())
    assert latest["run_date"] == "2026-11-02" and latest["run_dir"].endswith("/2026-11-02")
    assert [e["run_date"] for e in latest["history"]] == ["2026-11-02", "2026-11-01"]
    before = rows(Path(nightly["day2"]["run_dir"]))
    again = run_job_summary(
        out, "--run_date=2026-11-02", "--previous_run=latest", input_glob=f"{nightly['day2_input']}/*"
    )
    assert again["previous_run"]["run_dir"].endswith("/2026-11-01")  # not itself
    after = rows(Path(again["run_dir"]))
    assert set(after) == set(before) and all(np.array_equal(after[k]["vector"], before[k]["vector"]) for k in after)
    late = run_job_summary(out, "--run_date=2026-10-31", input_glob=f"{nightly['day2_input']}/*")  # an older day
    assert Path(late["run_dir"]).name == "2026-10-31"
    latest = json.loads((out / "LATEST").read_text())
    assert latest["run_date"] == "2026-11-02"  # not moved back
    assert [e["run_date"] for e in latest["history"]] == ["2026-11-02", "2026-11-01", "2026-10-31"]


def test_another_model_setting_embeds_everything_again(nightly, tmp_path):
    two = run_job_summary(
        tmp_path,
        "--previous_run=" + nightly["day1"]["run_dir"],
        "--layers=top",
        input_glob=f"{nightly['day2_input']}/*",
    )
    assert two["previous_run"]["mode"] == "full" and "layers ('average' -> 'top')" in two["previous_run"]["note"]
    assert two["counts"]["sentences_carried"] == 0
    assert two["counts"]["sentences_embedded"] == two["counts"]["sentences"]


def test_bad_previous_runs_are_refused_before_any_work(nightly, tmp_path):
    good = Path(nightly["day1"]["run_dir"])
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
                tmp_path / f"out-{name}", f"--previous_run={folder}", input_glob=f"{nightly['day2_input']}/*"
            )
        assert not (tmp_path / f"out-{name}").exists()


def test_a_day3_run_that_fails_leaves_latest_on_the_last_good_day(nightly, tmp_path):
    day3 = tmp_path / "day3"
    shutil.copytree(nightly["day2_input"], day3)
    (day3 / "broken.txt").write_bytes(b"bad \xff utf8\n")  # one failed document: over --max_failed_fraction=0
    with pytest.raises(Exception, match="not committing"):
        run_job_summary(
            nightly["out"], "--run_date=2026-11-03", "--previous_run=latest", "--max_failed_fraction=0",
            input_glob=f"{day3}/*",
        )  # fmt: skip
    assert not (nightly["out"] / "2026-11-03" / "_SUCCESS").exists()
    assert json.loads((nightly["out"] / "LATEST").read_text())["run_date"] == "2026-11-02"
