"""Contextual search (issue 17): an index built from a run finds every sentence as its own nearest neighbour, a
nightly run applied on top of its previous run gives the same index as one built from it from scratch, queries of
another model are refused, and word-in-context search ranks same-sense occurrences first on a sense-labelled set
(tests/fixtures/senses/) with the built-in English model."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from elmo.cli import run_cli
from elmo.model_dir import default_model_dir
from search import (
    EmptyQueryError,
    IndexModelError,
    RunNotFinishedError,
    SearchError,
    SearchIndex,
    UnknownWordError,
    apply_run,
    store,
)
from search import query as query_cli
from search.senses import precision_at_k
from tests.beam_testing import (
    REPO,
    restore_torch_threads,  # noqa: F401  (autouse fixture)
    run_job,
    sentence_vectors,
)

SENSES = REPO / "tests" / "fixtures" / "senses" / "senses.jsonl"
ENGLISH = default_model_dir()
# Measured with elmo-en-small, layers=average, centred cosine (docs/search.md): bank 0.69, bat 0.75, spring 0.39
# vs sense shares 0.48 / 0.48 / 0.30. For plant, bass and crane the model's contextual vectors do not separate the
# senses (at chance with every layer and with sentence vectors too; MODEL_CARD.md's polysemy check finds the same
# for plant): a limit of this small model, not of the search; the fixture prints them, no test asserts them
# (issue 15: a stronger built-in model).
SEPARATED = {"bank": 0.15, "bat": 0.15, "spring": 0.05}  # required margin of precision@5 over the sense share


def table_rows(index_dir: Path, name: str, key: list[str]) -> list[dict]:
    """Every row of an index table (vectors as lists), sorted by ``key``."""
    table = store.connect(str(index_dir)).open_table(name)
    rows = table.search().limit(None).to_arrow().to_pylist()
    return sorted(rows, key=lambda r: [r[k] for k in key])


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("search-sample")
    run_dir = run_job(root / "out", "--token_vectors")
    summary = apply_run(str(run_dir), str(root / "index"))
    return {"root": root, "run_dir": run_dir, "index_dir": root / "index", "summary": summary}


@pytest.fixture(scope="module")
def sample_index(sample) -> SearchIndex:
    return SearchIndex.open(str(sample["index_dir"]))


def test_every_sentence_is_its_own_nearest_neighbour(sample, sample_index):
    assert sample["summary"]["mode"] == "build" and not sample["summary"]["ann_index"]  # 695 rows: exact search
    vectors = sentence_vectors(sample["run_dir"])
    assert sample["summary"]["sentences"] == len(vectors)
    for sid, vector in vectors.items():
        found = sample_index.nearest(vector, k=10)
        best = found[0]["score"]
        assert best > 0.9999, (sid, found[0])
        assert sid in [f["id"] for f in found if f["score"] >= best - 1e-6], (sid, found[:3])  # exact duplicates tie


def test_a_stored_sentence_text_finds_itself(sample, sample_index):
    """The query is embedded exactly as the pipeline embedded the corpus (same tokenizer, state, layers)."""
    rows = table_rows(sample["index_dir"], store.SENTENCES, ["id"])[::50]
    for row in rows:
        found = sample_index.sentences(row["text"], k=5)
        best = found[0]["score"]
        assert best > 0.9999 and row["id"] in [f["id"] for f in found if f["score"] >= best - 1e-5], (row, found)


def test_word_search_returns_occurrences_of_the_word(sample_index):
    found = sample_index.word("State", "The state raised its taxes.", k=5)
    assert len(found) == 5 and all(f["token"].lower() == "state" for f in found)
    assert all(f"[{f['token']}]" in f["text"] for f in found)
    assert [f["rank"] for f in found] == [1, 2, 3, 4, 5]
    assert all(a["score"] >= b["score"] for a, b in itertools.pairwise(found))


def test_clear_errors(sample, sample_index, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(sample["run_dir"], unfinished)
    (unfinished / "_SUCCESS").unlink()
    with pytest.raises(RunNotFinishedError, match="has no _SUCCESS"):
        apply_run(str(unfinished), str(tmp_path / "index"))
    assert not (tmp_path / "index").exists() or store.read_state(store.connect(str(tmp_path / "index"))) is None
    with pytest.raises(SearchError, match=r"no index at \S+: build one with python -m search\.index"):
        SearchIndex.open(str(tmp_path / "nothing"))
    with pytest.raises(UnknownWordError, match="does not occur in the index"):
        sample_index.word("xylophonist", "The xylophonist played.")
    with pytest.raises(UnknownWordError, match="is not a token of the example"):
        sample_index.word("state", "The nation is strong.")
    for empty in ("", "   \n\t", "\u200b"):
        with pytest.raises(EmptyQueryError, match="empty"):
            sample_index.sentences(empty)
    with pytest.raises(EmptyQueryError):
        sample_index.word("", "The state is strong.")
    with pytest.raises(EmptyQueryError):
        sample_index.word("state", "   ")


def test_the_command_line(sample, capsys):
    index = str(sample["index_dir"])
    assert run_cli(query_cli.main, ["sentence", index, "The revenue exceeded the expenditure.", "-k", "3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["rank", "score", "id", "text"] and len(table) == 4
    assert run_cli(query_cli.main, ["word", index, "state", "The state is strong.", "-k", "2", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and lines[0]["token"].lower() == "state"
    assert run_cli(query_cli.main, ["sentence", index, " "], prog="python -m search.query") == 2
    assert "error: the query ' ' is empty" in capsys.readouterr().err
    assert run_cli(query_cli.main, ["word", index, "qwertyuiop", "qwertyuiop"], prog="q") == 2
    assert "does not occur in the index" in capsys.readouterr().err


def test_a_query_with_another_model_is_refused(sample):
    with pytest.raises(IndexModelError, match=r"fingerprint \w+; the index holds vectors of model"):
        SearchIndex.open(str(sample["index_dir"]), model_dir=str(ENGLISH))


def test_ann_index_from_the_threshold_on(sample, tmp_path):
    summary = apply_run(str(sample["run_dir"]), str(tmp_path / "ann"), ann_threshold=500)
    assert summary["ann_index"]
    table = store.connect(str(tmp_path / "ann")).open_table(store.SENTENCES)
    assert store.has_index(table, "vector")
    vectors = sentence_vectors(sample["run_dir"])
    ids = list(vectors)[::20]
    hits = [sid in [r["id"] for r in store.vector_search(table, vectors[sid], 10).to_pylist()] for sid in ids]
    assert np.mean(hits) >= 0.9  # approximate, re-ranked with the full vectors


def test_a_nightly_run_updates_the_index_to_equal_a_fresh_build(nightly_runs, tmp_path):
    nightly = {k: nightly_runs[k]["run_dir"] for k in ("day1", "day2")}
    incremental, fresh = tmp_path / "incremental", tmp_path / "fresh"
    first = apply_run(nightly["day1"], str(incremental))
    second = apply_run(nightly["day2"], str(incremental))
    assert first["mode"] == "build" and second["mode"] == "update"
    assert 0 < second["upserted"] < first["sentences"] / 4 and second["deleted"] > 0
    assert second["pipeline_delta"]["agrees"], second
    assert apply_run(nightly["day2"], str(fresh))["mode"] == "build"
    for name, key in ((store.SENTENCES, ["id"]), (store.TOKENS, ["sentence_id", "position"])):
        assert table_rows(incremental, name, key) == table_rows(fresh, name, key), name
    state = store.read_state(store.connect(str(incremental)))
    assert state["run"]["run_dir"] == nightly["day2"] and [h["mode"] for h in state["history"]] == ["build", "update"]
    assert (
        state["model"]["fingerprint"]
        == json.loads((Path(nightly["day2"]) / "manifest.json").read_text())["model"]["fingerprint"]
    )

    db = store.connect(str(incremental))
    versions = {name: db.open_table(name).version for name in (store.SENTENCES, store.TOKENS, store.STATE)}
    again = apply_run(nightly["day2"], str(incremental))  # the same run twice: nothing changes
    assert again["mode"] == "unchanged" and again["upserted"] == again["deleted"] == 0
    assert versions == {name: db.open_table(name).version for name in versions}


def test_the_latest_pointer_and_a_run_of_another_model(nightly_runs, senses, tmp_path):
    latest = apply_run(str(nightly_runs["out"]), str(tmp_path / "i"))["run"]
    assert latest == nightly_runs["day2"]["run_dir"]  # LATEST
    with pytest.raises(IndexModelError, match=r"has model \w+, the index holds model"):
        apply_run(senses["run_dir"], str(tmp_path / "i"))
    assert apply_run(senses["run_dir"], str(tmp_path / "i"), rebuild=True)["mode"] == "build"


@pytest.fixture(scope="module")
def senses(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("search-senses")
    run_dir = run_job(root / "out", f"--model={ENGLISH}", "--token_vectors", input_glob=str(SENSES))
    apply_run(str(run_dir), str(root / "index"))
    labelled = [json.loads(line) for line in SENSES.read_text().splitlines()]
    index = SearchIndex.open(str(root / "index"))
    result = precision_at_k(index, labelled, k=5)
    print("\nword-in-context precision@5 (elmo-en-small):")
    for word, r in result.items():
        print(f"  {word:8s} precision@5 {r['precision']:.2f}  sense share {r['share']:.2f}")
    return {"run_dir": str(run_dir), "index": index, "result": result, "root": root}


@pytest.mark.parametrize("word", sorted(SEPARATED))
def test_word_in_context_ranks_the_same_sense_first(senses, word):
    r = senses["result"][word]
    assert r["queries"] == r["occurrences"] == 24
    assert r["precision"] >= r["share"] + SEPARATED[word], r


def test_the_senses_are_not_used_elsewhere():
    """The sense set is this test's own: no sentence of it appears in the project's other data or code."""
    texts = [json.loads(line)["text"] for line in SENSES.read_text().splitlines()]
    folders = ("sample_data", "elmo", "corpus", "tests", "docs", "bench", "pipeline", "transforms")
    others = [p for d in folders for p in (REPO / d).rglob("*") if p.is_file()]
    others = [p for p in others if p.suffix in (".txt", ".jsonl", ".py", ".md", ".json") and p != SENSES]
    for path in others:
        content = path.read_text(errors="ignore")
        assert not any(t in content for t in texts), path


def test_a_map_of_a_word(senses, tmp_path):
    from search.plot import plot_word

    info = plot_word(senses["index"], "bank", str(tmp_path / "bank.png"))
    assert (tmp_path / "bank.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert info["occurrences"] == info["plotted"] == 24 and sum(info["clusters"]) == 24


def test_token_rows_one_per_occurrence(senses):
    db = store.connect(str(senses["root"] / "index"))
    tokens = db.open_table(store.TOKENS).search().limit(None).to_arrow()
    sentences = db.open_table(store.SENTENCES).search().select(["id", "text", "char_start"]).limit(None).to_arrow()
    assert sentences.num_rows == 144
    text = {r["id"]: (r["text"], r["char_start"]) for r in sentences.to_pylist()}
    for row in tokens.select(["sentence_id", "token", "word", "char_start", "char_end"]).to_pylist()[::37]:
        sentence, start = text[row["sentence_id"]]
        assert sentence[row["char_start"] - start : row["char_end"] - start] == row["token"]
        assert row["word"] == row["token"].lower()
    assert isinstance(tokens.schema.field("vector").type, pa.FixedSizeListType)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server, the standard AWS variables pointing at it (restored afterwards), a bucket."""
    from tests.storage_servers import clear_fsspec_clients, restore_environment, s3_server, set_environment

    server = s3_server(tmp_path_factory.mktemp("s3")).start()
    previous = None
    try:
        env = {"AWS_ENDPOINT_URL_S3": server.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        previous = set_environment({**env, "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
        import boto3

        clear_fsspec_clients()  # fsspec caches filesystems: an earlier module's server is gone

        boto3.client("s3").create_bucket(Bucket="search-test")
        options = {"aws_endpoint": server.url, "allow_http": "true", "aws_region": "us-east-1"}
        yield {**options, "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    finally:
        server.stop()
        if previous is not None:
            restore_environment(previous)
        clear_fsspec_clients()


@pytest.mark.integration
def test_run_folder_and_index_on_s3(sample, s3):
    import fsspec

    fs, _ = fsspec.core.url_to_fs("s3://search-test")
    fs.put(str(sample["run_dir"]), "search-test/runs/r1", recursive=True)
    built = apply_run("s3://search-test/runs/r1", "s3://search-test/index", storage_options=s3)
    assert built["mode"] == "build" and built["sentences"] == sample["summary"]["sentences"]
    assert built["tokens"] == sample["summary"]["tokens"]
    again = apply_run("s3://search-test/runs/r1", "s3://search-test/index", storage_options=s3)
    assert again["mode"] == "unchanged"
    remote = SearchIndex.open("s3://search-test/index", storage_options=s3)
    local = SearchIndex.open(str(sample["index_dir"]))
    query = "The treasury holds a balance."
    assert [r["id"] for r in remote.sentences(query, k=5)] == [r["id"] for r in local.sentences(query, k=5)]
    fs.rm("search-test/runs/r1/_SUCCESS")
    fs.invalidate_cache()
    with pytest.raises(RunNotFinishedError):
        apply_run("s3://search-test/runs/r1", "s3://search-test/index2", storage_options=s3)
