"""The polysemy evaluation (evaluation/polysemy): its data keeps its rules, its metric is right, it runs end to end."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from evaluation.polysemy import (
    Example,
    chance,
    evaluate,
    load_senses,
    markdown_table,
    nearest_neighbour_accuracy,
    problems,
    target_vectors,
)
from evaluation.polysemy.evaluate import _normalised, main
from tests.model_files import TINY_MODEL

REPO = Path(__file__).resolve().parents[1]
TINY = TINY_MODEL
FIXTURE_SENSES = REPO / "tests" / "fixtures" / "senses" / "senses.jsonl"


@pytest.fixture(scope="module")
def examples():
    return load_senses()


# --- the data ----------------------------------------------------------------------------------------------------


def test_the_data_keeps_every_rule(examples):
    assert problems(examples) == []


def test_at_least_30_words_of_at_least_two_senses_of_at_least_10_sentences(examples):
    by_word: dict[str, Counter] = {}
    for e in examples:
        by_word.setdefault(e.word, Counter())[e.sense] += 1
    assert len(by_word) >= 30 and len(examples) >= 600
    assert all(len(c) >= 2 and min(c.values()) >= 10 for c in by_word.values()), by_word


def test_the_word_is_one_identical_token_in_every_sense(examples):
    spellings: dict[str, set[str]] = {}
    for e in examples:
        assert e.tokens[e.position] == e.word and e.tokens.count(e.word) == 1, e.id
        assert [t.lower() for t in e.tokens].count(e.word.lower()) == 1, e.id
        spellings.setdefault(e.word.lower(), set()).add(e.word)
    assert all(len(s) == 1 for s in spellings.values()), spellings
    # a lower-case word never starts a sentence (it would be capitalised there)
    assert all(e.position > 0 for e in examples if e.word.islower())


def test_every_sentence_is_new_and_has_its_source(examples):
    assert {e.source for e in examples} == {"written for this project"}
    ours = Counter(_normalised(e.text) for e in examples)
    assert max(ours.values()) == 1
    others = [json.loads(line)["text"] for line in FIXTURE_SENSES.read_text().splitlines() if line.strip()]
    assert len(others) >= 144
    shared = set(ours) & {_normalised(t) for t in others}
    assert not shared, shared


def test_the_rule_checker_finds_broken_data():
    def ex(i, word, sense, text):
        from elmo.tokenize import Tokenizer

        return Example(f"x-{i}", word, sense, text, tuple(t.text for t in Tokenizer().tokens(text)), "test")

    good = "The old {} stood at the far end of the quiet street ."
    bad = [
        ex(0, "bank", "a", good.format("bank")),
        ex(1, "bank", "a", good.format("bank").replace(" .", "!")),  # same sentence, other punctuation
        ex(2, "bank", "b", "The bank and the bank were both closed on Sunday ."),  # twice
        ex(3, "bank", "b", "Bank holidays are long and the bank is closed then ."),  # other case too
        ex(4, "bank", "b", "A short bank ."),  # too short
    ]
    found = "\n".join(problems(bad, min_words=2, min_per_sense=3))
    for expected in ("same sentence as x-0", "occurs 2 times", "again in another case", "4 tokens", "fewer than 3"):
        assert expected in found, found
    assert "1 words, fewer than 2" in found


# --- the metric --------------------------------------------------------------------------------------------------


def test_chance_is_the_share_of_same_sense_neighbours():
    assert chance(["a"] * 10 + ["b"] * 10) == pytest.approx(9 / 19)
    assert chance(["a"] * 10 + ["b"] * 10 + ["c"] * 10) == pytest.approx(9 / 29)
    assert chance(["a"] * 3 + ["b"] * 7) == pytest.approx((3 * 2 + 7 * 6) / (10 * 9))


def test_perfectly_separated_senses_score_one():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 10
    senses = ["a"] * 5 + ["b"] * 7 + ["c"] * 4
    x = np.stack([centres["abc".index(s)] + rng.normal(size=16) * 0.01 for s in senses])
    assert nearest_neighbour_accuracy(x, senses) == 1.0


@pytest.mark.parametrize("counts", [(10, 10), (10, 10, 10), (3, 7), (2, 9)])
def test_identical_vectors_score_exactly_chance(counts):
    senses = [s for s, n in zip("abc", counts, strict=False) for _ in range(n)]
    x = np.tile(np.arange(1.0, 9.0), (len(senses), 1))
    assert nearest_neighbour_accuracy(x, senses) == pytest.approx(chance(senses), abs=1e-12)
    # float rounding (different batch shapes) is still a tie
    noisy = x * (1 + 1e-9 * np.random.default_rng(1).normal(size=x.shape))
    assert nearest_neighbour_accuracy(noisy, senses) == pytest.approx(chance(senses), abs=1e-12)


def test_ties_share_the_credit_and_cosine_ignores_length():
    # directions at 0, +60, -60, +100, -100 degrees: occurrence 0 has two tied nearest neighbours, one of each sense
    # (credit 1/2); every other one is 40 degrees from a neighbour of its own sense. Lengths do not matter.
    angles = np.radians([0.0, 60.0, -60.0, 100.0, -100.0])
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1) * np.array([[1.0], [3.0], [0.5], [2.0], [7.0]])
    senses = ["a", "a", "b", "a", "b"]
    assert nearest_neighbour_accuracy(x, senses) == pytest.approx((0.5 + 4) / 5)


def test_evaluate_reports_every_layer_and_the_contextual_average():
    examples = [Example(f"w-{s}-{i}", "w", s, "", ("w",), "test") for s in "ab" for i in range(4)]
    vectors = np.zeros((8, 3, 4))
    vectors[:, 0] = 1.0  # layer 0: context-free
    vectors[:4, 1, 0] = vectors[4:, 1, 1] = 1.0  # layer 1 separates the senses
    vectors[:, 2] = np.random.default_rng(0).normal(size=(8, 4))
    (result,) = evaluate(vectors, examples)
    assert list(result.accuracy) == ["0", "1", "2", "1-2"]
    assert result.accuracy["0"] == pytest.approx(result.chance) and result.chance == pytest.approx(3 / 7)
    assert result.accuracy["1"] == 1.0
    table = markdown_table([result])
    assert "| layer 0 | layer 1 | layer 2 | layers 1-2 |" in table and "| w | a/b | 4/4 | 0.43 | 0.43 | 1.00 |" in table


# --- end to end on the small test model ----------------------------------------------------------------------------


def test_end_to_end_on_the_tiny_model(tmp_path):
    from elmo import Elmo

    started = time.monotonic()
    examples = load_senses(words=["bank", "mole", "Apple"])
    vectors = target_vectors(Elmo.from_directory(TINY), examples)
    results = evaluate(vectors, examples)
    assert time.monotonic() - started < 20
    assert [r.word for r in results] == ["Apple", "bank", "mole"]
    for r in results:
        assert list(r.accuracy) == ["0", "1", "2", "1-2"]
        assert all(0.0 <= a <= 1.0 for a in r.accuracy.values()), r
        assert r.accuracy["0"] == pytest.approx(r.chance, abs=1e-9), r


def test_the_command_writes_the_table_json_and_picture(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "numbers.json", tmp_path / "senses.png"
    main(["--model", str(TINY), "--words", "bat,bow", "--json", str(out), "--plot", str(png), "--threads", "1"])
    printed = capsys.readouterr().out
    assert "| bat | animal/sport | 10/10 |" in printed and "**mean (2 words)**" in printed
    numbers = json.loads(out.read_text())
    assert numbers["layers"] == ["0", "1", "2", "1-2"] and set(numbers["words"]) == {"bat", "bow"}
    assert numbers["words"]["bow"]["chance"] == pytest.approx(9 / 29)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
