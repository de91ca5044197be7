"""The speed features of the biLM: the cross-batch token cache, the bit-exact mode, bf16's refusal, the packed
lockstep LSTM (against the float64 oracle through the golden tests; here against itself in float64)."""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import elmo.bf16
import elmo.malloc
from elmo import Elmo, published_config
from elmo.bf16 import bf16_refusal
from elmo.errors import ConfigError
from elmo.model import Arithmetic, BiLm
from elmo.model_dir import default_model_dir
from elmo.token_cache import TokenCache, encode_in_chunks
from tests.model_files import TINY_MODEL

REPO = Path(__file__).resolve().parent.parent
BUILTIN_MODEL_DIR = default_model_dir()
TINY_MODEL_DIR = TINY_MODEL  # a test model

SENTENCES = [
    "The bank raised its rates again .".split(),
    "We sat on the bank of the river and watched the boats .".split(),
    "A bat flew out of the cave at dusk .".split(),
    "He swung the bat and missed the ball completely .".split(),
    "Spring came early this year .".split(),
    "The old spring in the sofa was broken , so nobody sat there any more .".split(),
    "Apple sold more phones than expected .".split(),
    "I ate an apple .".split(),
    "Prices rose by 4 percent last year , the highest increase since 2008 .".split(),
    "Yes .".split(),
]


def small_random_model(seed: int = 0) -> BiLm:
    """The published ``small`` shape with random weights (a wide LSTM: many GEMM columns, few rows)."""
    torch.manual_seed(seed)
    bilm = BiLm(published_config("small"))
    for parameter in bilm.parameters():
        torch.nn.init.normal_(parameter, 0.0, 0.05)
    return bilm


def test_cached_vectors_equal_uncached_within_float32_rounding():
    cached = Elmo.from_directory(BUILTIN_MODEL_DIR, initial_state="zeros")
    plain = Elmo.from_directory(BUILTIN_MODEL_DIR, initial_state="zeros", token_cache_size=0)
    assert cached.bilm.token_cache is not None and plain.bilm.token_cache is None
    for passes in (1, 2):  # the second pass is answered from the cache
        for a, b in zip(cached.embed(SENTENCES), plain.embed(SENTENCES), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        if passes == 1:
            assert cached.cache_stats.hits == 0 and cached.cache_stats.misses == len(cached.bilm.token_cache) > 0
    stats = cached.cache_stats
    assert stats.hits == stats.misses and stats.hit_rate == 0.5


def test_cached_token_vector_has_the_same_bits_whatever_batch_computed_it_first():
    model = Elmo.from_directory(BUILTIN_MODEL_DIR, initial_state="zeros")
    alone = model.embed([["bank"]], layers="all")[0][0, 0]  # layer 0 of "bank" encoded on its own
    for seed in range(3):
        model.bilm.token_cache.clear()
        batch = SENTENCES[:]
        random.Random(seed).shuffle(batch)
        model.embed(batch)  # "bank" now encoded in a chunk with other tokens
        again = model.embed([["bank"]], layers="all")[0][0, 0]
        assert again.tobytes() == alone.tobytes()


def test_encoding_in_fixed_chunks_does_not_depend_on_neighbours():
    encoder = Elmo.from_directory(TINY_MODEL_DIR, initial_state="zeros", token_cache_size=0).bilm.char_encoder
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 262, (40, 50), generator=generator)
    whole = encode_in_chunks(encoder, ids, 16)
    for start in (0, 7, 23):
        part = encode_in_chunks(encoder, ids[start : start + 5], 16)
        assert torch.equal(part, whole[start : start + 5])


def test_cache_evicts_the_least_recently_used_and_counts():
    encoder = Elmo.from_directory(TINY_MODEL_DIR, initial_state="zeros", token_cache_size=0).bilm.char_encoder
    cache = TokenCache(capacity=3, chunk_rows=4)
    rows = torch.arange(1, 6).unsqueeze(1).repeat(1, 50)  # 5 distinct "tokens"
    cache.encode(encoder, rows[:3])  # a b c
    cache.encode(encoder, rows[:1])  # a is now the most recent
    cache.encode(encoder, rows[3:4])  # d evicts b (least recently used)
    assert cache.stats.evictions == 1 and len(cache) == 3
    before = cache.stats.hits
    cache.encode(encoder, rows[[0, 2, 3]])  # a c d: all cached
    assert cache.stats.hits == before + 3
    cache.encode(encoder, rows[1:2])  # b was evicted: a miss
    assert cache.stats.misses == 5
    assert cache.take_counts().misses == 5 and cache.take_counts().misses == 0


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_bad_cache_sizes_are_refused(bad):
    with pytest.raises(ConfigError, match="token_cache_size"):
        Elmo.from_directory(TINY_MODEL_DIR, token_cache_size=bad)


@pytest.mark.parametrize("model_dir", ["builtin", "small"])
def test_bit_exact_mode_gives_the_same_bytes_alone_and_in_any_batch(model_dir):
    if model_dir == "builtin":
        model = Elmo.from_directory(BUILTIN_MODEL_DIR, bit_exact=True)
    else:
        model = Elmo(small_random_model(), bit_exact=True)
    alone = [model.embed([sentence], layers="all")[0] for sentence in SENTENCES]
    rng = random.Random(0)
    for _ in range(3):
        model.bilm.token_cache.clear()
        batch = SENTENCES * rng.randrange(1, 4)
        rng.shuffle(batch)
        outputs = model.embed(batch, layers="all", batch_size=rng.choice([3, 8, 64]))
        for sentence, output in zip(batch, outputs, strict=True):
            assert output.tobytes() == alone[SENTENCES.index(sentence)].tobytes()


def test_default_mode_is_only_rounding_away_from_bit_exact():
    exact = Elmo.from_directory(BUILTIN_MODEL_DIR, bit_exact=True)
    default = Elmo.from_directory(BUILTIN_MODEL_DIR)
    for a, b in zip(exact.embed(SENTENCES), default.embed(SENTENCES), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_lockstep_packed_lstm_matches_one_sentence_at_a_time_in_float64():
    """Batching (packing, lockstep directions, rows stopping at different steps) changes nothing but rounding."""
    model = Elmo(small_random_model().double(), initial_state="zeros", token_cache_size=0)
    batched = model.embed(SENTENCES, layers="all")
    for sentence, output in zip(SENTENCES, batched, strict=True):
        np.testing.assert_allclose(output, model.embed([sentence], layers="all")[0], atol=1e-12, rtol=0)


def test_final_state_of_each_row_is_taken_after_its_own_last_step():
    model = Elmo(small_random_model().double(), initial_state="zeros", token_cache_size=0)
    _, batch_state = model.bilm(torch.from_numpy(_ids(SENTENCES[:4])))
    for row, sentence in enumerate(SENTENCES[:4]):
        _, alone = model.bilm(torch.from_numpy(_ids([sentence])))
        torch.testing.assert_close(batch_state.h[:, :, row], alone.h[:, :, 0], atol=1e-12, rtol=0)
        torch.testing.assert_close(batch_state.c[:, :, row], alone.c[:, :, 0], atol=1e-12, rtol=0)


def _ids(sentences: list[list[str]]) -> np.ndarray:
    from elmo.chars import batch_to_ids

    return batch_to_ids(sentences, 50)


def test_bf16_is_refused_on_a_cpu_without_amx_and_offered_with_it():
    cpu = torch.device("cpu")
    assert "no AMX" in bf16_refusal(cpu, flags={"avx512f", "avx512_bf16"})
    assert "emulated" in bf16_refusal(cpu, flags={"avx2", "fma"})  # no bf16 hardware at all: far slower
    assert elmo.bf16.native_bf16_cpu({"avx512_bf16"}) and not elmo.bf16.native_bf16_cpu({"avx2"})
    assert bf16_refusal(cpu, flags={"avx512f", "amx_tile", "amx_bf16"}) is None
    if bf16_refusal(cpu) is not None:  # this machine: the API says so instead of running slower
        with pytest.raises(ConfigError, match="bf16 refused"):
            Elmo.from_directory(TINY_MODEL_DIR, bf16=True)


def test_bf16_arithmetic_stays_close_to_float32():
    """The mode's numbers (measured here even where it is refused for speed): bf16 GEMMs, float32 state."""
    model = Elmo.from_directory(BUILTIN_MODEL_DIR, initial_state="zeros")
    sentences = [*SENTENCES, "Counterrevolutionaries opposed antidisestablishmentarianism .".split()]  # long tokens
    reference = model.embed(sentences, layers="all")
    model.bilm.arithmetic = Arithmetic(bf16=True)
    approximate = model.embed(sentences, layers="all")
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(approximate, reference, strict=True))
    scale = max(float(np.max(np.abs(b))) for b in reference)
    assert 0 < worst < 0.05 * scale


def test_bf16_fused_and_eager_steps_agree(monkeypatch):
    """The compiled bf16 tail and the eager bf16 step (used where the kernel cannot run) compute the same thing: the
    same bfloat16 GEMM results, the gate sum and cell in float32 (they differ by the kernel's tanh and by where a
    value rounds to bfloat16, far below the mode's own error)."""
    import elmo.model

    model = Elmo.from_directory(BUILTIN_MODEL_DIR, initial_state="zeros")
    model.bilm.arithmetic = Arithmetic(bf16=True)
    fused = model.embed(SENTENCES, layers="all")
    monkeypatch.setattr(elmo.model, "can_fuse_bf16", lambda *tensors: False)
    model.bilm.token_cache.clear()
    eager = model.embed(SENTENCES, layers="all")
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(fused, eager, strict=True))
    assert worst < 1e-2


def test_bf16_weight_copies_are_made_once_and_remade_when_a_weight_changes():
    bilm = small_random_model()
    bilm.arithmetic = Arithmetic(bf16=True)
    step = bilm.pair_step(0)
    assert step.hidden_kernel.dtype == torch.bfloat16 and step.hidden_kernel.is_contiguous()
    assert bilm.pair_step(0) is step and bilm.pair_step(1) is not step  # kept per depth
    ids = torch.randint(1, 200, (3, 4, 50))
    bilm(ids)
    assert bilm.pair_step(0) is step  # a forward pass reuses it
    encoder_copies = bilm.char_encoder._bf16_copies.of(bilm.char_encoder._gemm_weights(), torch.bfloat16)
    with torch.no_grad():
        bilm.directions[1][0].projection.mul_(2.0)  # an in-place change of one direction's weight
        bilm.char_encoder.highway_kernels[0].add_(1.0)
    changed = bilm.pair_step(0)
    assert changed is not step
    torch.testing.assert_close(changed.projection[1].float(), 2.0 * step.projection[1].float(), rtol=1e-2, atol=0)
    new_copies = bilm.char_encoder._bf16_copies.of(bilm.char_encoder._gemm_weights(), torch.bfloat16)
    assert bilm.char_encoder._bf16_copies.of(bilm.char_encoder._gemm_weights(), torch.bfloat16) is new_copies
    assert new_copies[0] is not encoder_copies[0]
    bilm.arithmetic = Arithmetic()  # another arithmetic: another step, float32 weights, the bf16 copies freed
    assert bilm.pair_step(0).hidden_kernel.dtype == torch.float32
    assert bilm.char_encoder._bf16_copies._value is None


def test_changing_the_arithmetic_empties_the_token_cache():
    model = Elmo.from_directory(BUILTIN_MODEL_DIR, initial_state="zeros")
    model.embed(SENTENCES)
    assert len(model.bilm.token_cache) > 0
    model.bilm.arithmetic = Arithmetic(bf16=True)  # cached float32 vectors would mix into bf16 results
    assert len(model.bilm.token_cache) == 0


def test_the_gpu_benchmark_says_no_gpu_clearly_on_a_cpu_only_machine():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: bench/bench_gpu.py would measure it")
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_gpu"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2
    assert done.stdout.startswith("no GPU:") and "nothing was measured" in done.stdout


def _token_ids(words: list[str]) -> torch.Tensor:
    from elmo.chars import batch_to_ids

    return torch.as_tensor(batch_to_ids([words])[0])  # (len(words), 50)


def test_short_tokens_read_24_positions_and_get_the_full_width_result(monkeypatch):
    """A token of up to 16 chars (18 with its boundaries, widest filter 7) makes every window past position 24
    all padding: the encoder reads 24 positions and adds that window's value once. In float64, on the published
    ``small`` shape with random weights, the result equals reading all 50 positions."""
    import elmo.model

    encoder = small_random_model().char_encoder.double()
    words = ["a", "bank", "Apple", "1,000", "sixteen-chars-ok", "seventeen-chars-x", "antidisestablishmentarianism"]
    ids = _token_ids(words)
    assert encoder.short_rows(ids).tolist() == [True, True, True, True, True, False, False]
    assert not encoder.short_rows(torch.zeros(2, 50, dtype=torch.int64)).any()  # padded (non-existent) tokens
    with torch.no_grad():
        cheap = encoder(ids)
        monkeypatch.setattr(elmo.model, "SHORT_TOKEN_CHARS", 50)  # every token read at full width
        assert not encoder.short_rows(ids).any()
        full = encoder(ids)
    assert float((cheap - full).abs().max()) <= 1e-12


def test_the_short_token_path_passes_gradients_to_every_filter():
    """The trainer runs the same char encoder with autograd: the stacked-filter GEMM of short tokens must not cut
    the filters off (its kept matrix is for inference only), and its gradients equal the full-width path's."""
    import elmo.model

    encoder = small_random_model().char_encoder.double()
    ids = _token_ids(["a", "bank", "Apple", "sixteen-chars-ok"])
    assert encoder.short_rows(ids).all()
    encoder(ids).square().sum().backward()
    cheap = {name: p.grad.clone() for name, p in encoder.named_parameters() if "convolutions" in name}
    assert len(cheap) == 2 * len(encoder.convolutions) and all(g.abs().sum() > 0 for g in cheap.values())
    encoder.zero_grad()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(elmo.model, "SHORT_TOKEN_CHARS", 50)  # the convolutions over the full width
        encoder(ids).square().sum().backward()
    for name, p in encoder.named_parameters():
        if name in cheap:
            torch.testing.assert_close(cheap[name], p.grad, rtol=1e-9, atol=1e-12)


def test_a_token_has_the_same_bits_among_short_or_long_neighbours():
    """Short and long tokens take different paths; chunks hold one kind each, so a token's bits do not depend on
    which kinds it was encoded with (bit-exact mode and the cache rely on it)."""
    model = Elmo.from_directory(BUILTIN_MODEL_DIR, initial_state="zeros", bit_exact=True)
    short, long_ = "bank", "counterrevolutionaries"
    alone = {w: model.embed([[w]], layers="all")[0][0, 0].tobytes() for w in (short, long_)}
    model.bilm.token_cache.clear()
    mixed = model.embed([[short, long_, "a", "incomprehensibilities"]], layers="all")[0][0, :2]  # layer 0
    assert mixed[0].tobytes() == alone[short] and mixed[1].tobytes() == alone[long_]


_FAULTS_SCRIPT = """
import resource, torch
from elmo.malloc import keep_freed_memory
applied = keep_freed_memory()
def page_faults_of_one_batch():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(2, 2000, 128)
    gates = torch.bmm(x, torch.ones(2, 128, 4096))  # (2, 2000, 4D): 64 MB, like the LSTM's input GEMM
    outputs = gates[:, :, :128].tanh()
    del x, gates, outputs
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults = [page_faults_of_one_batch() for _ in range(8)]
print(applied, min(faults[-3:]))
"""


def _faults_after_warmup(setting: str) -> tuple[str, int, str]:
    """(applied?, fewest page faults of one of the last 3 of 8 same-shaped "batches") in a fresh process with
    ELMO_MALLOC=setting, and the process's stderr."""
    env = dict(os.environ, ELMO_MALLOC=setting)
    done = subprocess.run(
        [sys.executable, "-c", _FAULTS_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    applied, faults = done.stdout.split()
    return applied, int(faults), done.stderr


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_freed_tensor_memory_is_reused_without_page_faults_unless_the_user_opts_out():
    applied, faults, _ = _faults_after_warmup("keep")
    assert applied == "True"
    assert faults < 100  # the heap keeps the freed blocks: a batch like the last one faults nothing in
    applied, faults, _ = _faults_after_warmup("system")
    assert applied == "False"
    assert faults > 10_000  # glibc's own setting: a fresh mmap per batch, each 4 KB page faulted in (16,384+)
    applied, _, stderr = _faults_after_warmup("sytem")  # a typo is not silent
    assert applied == "True" and "ELMO_MALLOC='sytem' is not one of keep, system" in stderr


_FREEZE_SCRIPT = """
import gc, json
from elmo.cli import run_cli
from elmo.malloc import freeze_imported_objects
seen = {}
def command(argv):
    seen["frozen"] = gc.get_freeze_count()
    freeze_imported_objects()  # a second call (pipeline.run and run_cli both call it) freezes nothing more
    seen["again"] = gc.get_freeze_count()
run_cli(command, [])
print(json.dumps(seen))
"""


def test_a_command_runs_with_its_imported_objects_frozen_out_of_the_cycle_collector():
    done = subprocess.run([sys.executable, "-c", _FREEZE_SCRIPT], cwd=REPO, capture_output=True, text=True, check=True)
    seen = json.loads(done.stdout)
    assert seen["frozen"] > 10_000  # the interpreter, elmo and torch's objects, frozen before the command ran
    assert seen["again"] == seen["frozen"]


@pytest.mark.parametrize(
    ("argv", "argv0", "command"),
    [
        (["python", "-m", "pipeline.run", "--input", "x"], "-m", "pipeline.run"),
        (["python", "-X", "importtime", "-mpipeline.run"], "-m", "pipeline.run"),
        (["python", "-m", "pipeline.run"], "/repo/pipeline/run.py", None),  # runpy is past the import: too late
        (["python", "-c", "import pipeline"], "-c", None),
        (["pytest", "-m", "not integration"], "/venv/bin/pytest", None),
    ],
)
def test_the_command_being_started_is_read_only_while_runpy_imports_it(argv, argv0, command):
    assert elmo.malloc.command_being_started(argv, argv0) == command


# Each command as `python -m` starts it: the collector paused while the package imports, then the module run as
# __main__ (with --help). The command's entry point must turn the collector back on before anything else runs.
_PAUSE_SCRIPT = """
import gc, json, runpy, sys
import elmo.malloc as malloc
seen = {"other": malloc.pause_collector_while_command_imports("corpus.build"), "enabled": gc.isenabled()}
for command in sorted(malloc.COMMANDS):
    malloc._frozen = False
    paused = malloc.pause_collector_while_command_imports(command)
    was = gc.isenabled()
    sys.argv = [command, "--help"]
    try:
        runpy.run_module(command, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        code = done.code
    seen[command] = [paused, was, gc.isenabled(), code]
print(json.dumps(seen))
"""


def test_commands_import_with_the_collector_paused_and_turn_it_back_on_first():
    done = subprocess.run(
        [sys.executable, "-c", _PAUSE_SCRIPT], cwd=REPO, capture_output=True, text=True, check=True, timeout=300
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen.pop("other") is False and seen.pop("enabled") is True  # not one of ours: left alone
    assert set(seen) == set(elmo.malloc.COMMANDS)
    for command, (paused, enabled_when_paused, enabled_after, code) in seen.items():
        assert (paused, enabled_when_paused, enabled_after, code) == (True, False, True, 0), command
