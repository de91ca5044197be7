"""Training: the loss falls, resume is exact, the export loads back with identical outputs, DDP runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import elmo.bf16
from elmo import Elmo
from elmo.chars import batch_to_ids
from elmo.training.train import main as train_main
from elmo.training.vocab import Vocabulary
from tests.conftest import GOLDEN

TINY_OPTIONS = {
    "lstm": {
        "dim": 32,
        "projection_dim": 16,
        "n_layers": 2,
        "cell_clip": None,
        "proj_clip": None,
        "use_skip_connections": True,
    },
    "char_cnn": {
        "embedding": {"dim": 4},
        "filters": [[1, 8], [2, 8], [3, 16]],
        "n_highway": 1,
        "activation": "relu",
        "n_characters": 262,
        "max_characters_per_token": 50,
    },
}


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    """Train/held-out shards and a vocabulary built from the fixture sentences."""
    root = tmp_path_factory.mktemp("corpus")
    lists = json.loads((GOLDEN / "skip" / "sentences.json").read_text())
    sentences = [s for part in lists for s in part]
    (root / "train-0.txt").write_text("\n".join(sentences[:20] * 4) + "\n")
    (root / "train-1.txt").write_text("\n".join(sentences[20:] * 4) + "\n")
    (root / "heldout.txt").write_text("\n".join(sentences[:3]) + "\n")
    Vocabulary.build([s.split() for s in sentences], min_count=2).save(str(root / "vocab.txt"))
    (root / "options.json").write_text(json.dumps(TINY_OPTIONS))
    return root


def _train(corpus, out, steps, *extra) -> list[dict]:
    argv = [
        "--train",
        str(corpus / "train-*.txt"),
        "--heldout",
        str(corpus / "heldout.txt"),
        "--vocab",
        str(corpus / "vocab.txt"),
        "--options",
        str(corpus / "options.json"),
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--unroll-steps",
        "10",
        "--max-steps",
        str(steps),
        "--n-negative-samples",
        "32",
        "--checkpoint-every",
        "5",
        "--eval-every",
        "1000",
        "--log-every",
        "1000",
        "--threads",
        "1",
        *extra,
    ]
    assert train_main(argv) == 0
    return torch.load(out / "checkpoint-rank0.pt", weights_only=True)["history"]


def _train_status(corpus, out, steps, *extra) -> int:
    """Exit status of a training command with only ``extra`` besides the data, --out and --max-steps."""
    argv = ["--train", str(corpus / "train-*.txt"), "--vocab", str(corpus / "vocab.txt"), "--out", str(out)]
    return train_main([*argv, "--max-steps", str(steps), "--threads", "1", *extra])


def test_loss_falls_and_resume_is_exact(tiny_corpus, tmp_path):
    schedule = ("--learning-rate", "0.01", "--final-learning-rate", "0.001")
    straight = _train(tiny_corpus, tmp_path / "a", 40, *schedule)
    losses = [r["loss"] for r in straight]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5, losses
    assert straight[-1]["forward_perplexity"] < straight[-1]["backward_perplexity"] * 2  # both evaluated
    # the rate fell linearly: the last update (step index 39 of 40) used 0.01 - 0.009 * 39/40
    saved = torch.load(tmp_path / "a" / "checkpoint-rank0.pt", weights_only=True)
    assert saved["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01 - 0.009 * 39 / 40)
    # Interrupted at step 15 (checkpoint), then resumed to 40: the same loss curve, exactly. The schedule is set by
    # --max-steps, so the interrupted run is the same run stopped early by --max-hours's checkpoint path.
    _train(tiny_corpus, tmp_path / "b", 40, *schedule, "--max-hours", "1e-9")  # stops after its first step
    assert torch.load(tmp_path / "b" / "checkpoint-rank0.pt", weights_only=True)["step"] == 1
    resumed = _train(tiny_corpus, tmp_path / "b", 40, *schedule)
    assert [r["loss"] for r in resumed] == losses


def test_a_resumed_run_keeps_its_own_settings_and_refuses_other_ones(tiny_corpus, tmp_path, capsys):
    schedule = ("--learning-rate", "0.01", "--final-learning-rate", "0.001", "--seed", "3")
    straight = _train(tiny_corpus, tmp_path / "a", 12, *schedule)
    _train(tiny_corpus, tmp_path / "b", 12, *schedule, "--max-hours", "1e-9")  # stops after its first step
    checkpoint = tmp_path / "b" / "checkpoint-rank0.pt"
    before = checkpoint.read_bytes()
    # a command that would make it another run is refused before training, naming each setting
    assert _train_status(tiny_corpus, tmp_path / "b", 12, "--learning-rate", "0.02", "--batch-size", "8") == 2
    err = capsys.readouterr().err
    assert "holds a checkpoint of a run with other settings" in err
    assert "--learning-rate: 0.01 there, 0.02 here" in err and "--batch-size: 4 there, 8 here" in err
    assert checkpoint.read_bytes() == before
    # leaving the run's settings out continues it with the checkpoint's: the same curve as straight through
    resumed = _train(tiny_corpus, tmp_path / "b", 12)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]
    assert torch.load(checkpoint, weights_only=True)["config"]["seed"] == 3


def test_a_run_resumed_on_other_training_text_is_refused(tiny_corpus, tmp_path, capsys):
    _train(tiny_corpus, tmp_path / "run", 2)
    other = tmp_path / "other"
    other.mkdir()
    for name in ("train-0.txt", "train-1.txt"):  # the same sentences in other shards: another order
        (other / name).write_text((tiny_corpus / name).read_text())
    (other / "train-2.txt").write_text("one more sentence .\n")
    argv = ["--train", str(other / "train-*.txt"), "--vocab", str(tiny_corpus / "vocab.txt")]
    argv += ["--out", str(tmp_path / "run"), "--max-steps", "4", "--threads", "1"]
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert "was trained on other data" in err and "train_sentences" in err and "train_sha256" in err
    assert "vocab_sha256" not in err  # the same vocabulary


def test_bf16_training_learns_keeps_float32_state_and_resumes_exactly(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(elmo.bf16, "cpu_flags", lambda: {"amx_bf16"})  # the flag is checked, autocast runs anywhere
    schedule = ("--learning-rate", "0.01", "--bf16")
    straight = _train(tiny_corpus, tmp_path / "a", 30, *schedule)
    float32 = _train(tiny_corpus, tmp_path / "f", 30, "--learning-rate", "0.01")
    losses = [r["loss"] for r in straight]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5, losses
    # bfloat16 arithmetic really ran (not the same bits as float32) and stays close to it
    assert losses != [r["loss"] for r in float32]
    assert losses[0] == pytest.approx(float32[0]["loss"], rel=0.02)
    saved = torch.load(tmp_path / "a" / "checkpoint-rank0.pt", weights_only=True)
    assert saved["config"]["bf16"] is True
    assert all(t.dtype == torch.float32 for t in saved["state_dict"].values())
    assert all(t.dtype == torch.float32 for t in saved["lstm_state"])  # the carried state too
    _train(tiny_corpus, tmp_path / "b", 30, *schedule, "--max-hours", "1e-9")  # stops after its first step
    assert [r["loss"] for r in _train(tiny_corpus, tmp_path / "b", 30, *schedule)] == losses


def test_bf16_training_is_refused_where_it_would_be_slower(tiny_corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(elmo.bf16, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    argv = ["--train", str(tiny_corpus / "train-*.txt"), "--vocab", str(tiny_corpus / "vocab.txt"), "--bf16"]
    assert train_main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert "--bf16: this CPU has AVX-512-BF16 but no AMX" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_step_encodes_each_token_type_once_for_both_directions(tiny_corpus):
    from elmo.training.data import PackedCorpus, WindowBatcher, read_sentences

    corpus = PackedCorpus(
        read_sentences(str(tiny_corpus / "train-*.txt")), Vocabulary.load(str(tiny_corpus / "vocab.txt"))
    )
    batcher = WindowBatcher(corpus, batch_size=4, unroll_steps=10)
    for step in (0, 3, batcher.steps_per_epoch + 1):
        batch = batcher.batch(step)
        start = (step % batcher.steps_per_epoch) * 10
        forward_types = batcher.forward_lanes[:, start : start + 10]
        backward_types = batcher.backward_lanes[:, start : start + 10]
        np.testing.assert_array_equal(batch.token_chars[batch.forward_tokens], corpus.type_chars[forward_types])
        np.testing.assert_array_equal(batch.token_chars[batch.backward_tokens], corpus.type_chars[backward_types])
        distinct = len(np.unique(np.concatenate([forward_types, backward_types])))
        assert batch.token_chars.shape[0] == distinct == len(np.unique(batch.token_chars, axis=0))


def test_init_from_a_model_starts_there_and_warms_up_only_the_softmax(tiny_corpus, tmp_path):
    from elmo.training.model import TrainableBiLm, export_bilm

    _train(tiny_corpus, tmp_path / "first", 10, "--export", str(tmp_path / "model"))
    start = Elmo.from_directory(tmp_path / "model").bilm.state_dict()

    def second_run(steps: int) -> TrainableBiLm:
        argv = ["--train", str(tiny_corpus / "train-*.txt"), "--vocab", str(tiny_corpus / "vocab.txt")]
        argv += ["--init-from", str(tmp_path / "model"), "--out", str(tmp_path / "second"), "--batch-size", "4"]
        argv += ["--unroll-steps", "10", "--n-negative-samples", "32", "--softmax-warmup-steps", "3"]
        assert train_main([*argv, "--max-steps", str(steps), "--threads", "1"]) == 0
        saved = torch.load(tmp_path / "second" / "checkpoint-rank0.pt", weights_only=True)
        model = TrainableBiLm(Elmo.from_directory(tmp_path / "model").config, len(saved["state_dict"]["softmax_bias"]))
        model.load_state_dict(saved["state_dict"])
        return model

    warmed = second_run(3)  # three warm-up steps: the network is the model's, the softmax has learned
    for name, value in export_bilm(warmed).state_dict().items():
        torch.testing.assert_close(value, start[name], rtol=0, atol=1e-6, msg=name)
    assert warmed.softmax_bias.abs().sum() > 0  # initialised to zeros, so it was trained
    trained = second_run(6)  # resumed past the warm-up: now the network learns too
    moved = [name for name, value in export_bilm(trained).state_dict().items() if not torch.equal(value, start[name])]
    assert "char_encoder.projection.weight" in moved and any(name.startswith("directions") for name in moved)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--init-from", "MODEL", "--options", "OPTIONS"], "leave out --options"),
        (["--final-learning-rate", "-1"], "--final-learning-rate must be"),
        (["--softmax-warmup-steps", "-1"], "--softmax-warmup-steps must be at least 0"),
    ],
)
def test_bad_training_flags_are_refused_before_training(tiny_corpus, tmp_path, capsys, flags, message):
    flags = [str(tiny_corpus / "options.json") if f == "OPTIONS" else f for f in flags]
    flags = [str(tmp_path / "missing-model") if f == "MODEL" else f for f in flags]
    argv = ["--train", str(tiny_corpus / "train-*.txt"), "--vocab", str(tiny_corpus / "vocab.txt"), *flags]
    assert train_main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_full_softmax_and_adagrad_recipe_train(tiny_corpus, tmp_path):
    history = _train(
        tiny_corpus, tmp_path, 20, "--n-negative-samples", "0", "--optimizer", "adagrad", "--learning-rate", "0.2"
    )
    assert history[-1]["loss"] < history[0]["loss"]


def test_export_loads_back_with_identical_outputs(tiny_corpus, tmp_path):
    from elmo.training.model import TrainableBiLm

    _train(tiny_corpus, tmp_path / "run", 10)
    assert (
        train_main(
            [
                "--train",
                str(tiny_corpus / "train-*.txt"),
                "--vocab",
                str(tiny_corpus / "vocab.txt"),
                "--options",
                str(tiny_corpus / "options.json"),
                "--out",
                str(tmp_path / "run"),
                "--max-steps",
                "10",
                "--batch-size",
                "4",
                "--unroll-steps",
                "10",
                "--export",
                str(tmp_path / "export"),
            ]
        )
        == 0
    )
    exported = Elmo.load(
        tmp_path / "export" / "options.json",
        tmp_path / "export" / "weights.hdf5",
        initial_state="zeros",
        dtype=torch.float64,
    )
    saved = torch.load(tmp_path / "run" / "checkpoint-rank0.pt", weights_only=True)
    trained = TrainableBiLm(exported.config, saved["state_dict"]["softmax_bias"].shape[0])
    trained.load_state_dict(saved["state_dict"])
    trained = trained.double().eval()
    sentence = ["The", "unseen", "words", "still", "embed", "."]
    ids = torch.from_numpy(batch_to_ids([["<S>", *sentence, "</S>"]]))  # (1, T+2, C)
    with torch.no_grad():
        h, c = trained.zero_state(1)
        forward, _, _ = trained.run_direction(0, trained.encode_tokens(ids), h[0], c[0])
        backward, _, _ = trained.run_direction(1, trained.encode_tokens(ids.flip(1)), h[1], c[1])
    expected = np.stack(
        [torch.cat([f, b.flip(1)], -1)[0, 1:-1].numpy() for f, b in zip(forward, backward, strict=True)]
    )
    # float64 compute; only the float32 storage of the summed biases differs (~1e-7 relative)
    np.testing.assert_allclose(exported.embed_sentence(sentence), expected, rtol=0, atol=1e-6)
    assert (tmp_path / "export" / "vocab.txt").read_text().startswith("<S>\n</S>\n<UNK>\n")


@pytest.mark.integration
def test_two_process_ddp_on_cpu(tiny_corpus, tmp_path):
    """torchrun with 2 CPU processes (gloo): both ranks train and keep identical parameters."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "elmo.training.train",
        "--train",
        str(tiny_corpus / "train-*.txt"),
        "--vocab",
        str(tiny_corpus / "vocab.txt"),
        "--options",
        str(tiny_corpus / "options.json"),
        "--out",
        str(tmp_path),
        "--batch-size",
        "2",
        "--unroll-steps",
        "10",
        "--max-steps",
        "6",
        "--n-negative-samples",
        "16",
        "--threads",
        "1",
        "--device",
        "cpu",
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"checkpoint-rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 6
    for name, value in ranks[0]["state_dict"].items():
        torch.testing.assert_close(value, ranks[1]["state_dict"][name], msg=name)


def test_export_checkpoint_evaluates_all_heldout_text(tiny_corpus, tmp_path):
    _train(tiny_corpus, tmp_path / "run", 10)
    assert (
        train_main(
            [
                "--export-checkpoint",
                str(tmp_path / "run" / "checkpoint-rank0.pt"),
                "--heldout",
                str(tiny_corpus / "heldout.txt"),
                "--export",
                str(tmp_path / "export"),
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "export" / "training.json").read_text())
    final = [r for r in summary["evaluations"] if r.get("final_evaluation")]
    assert len(final) == 1 and final[0]["heldout_tokens"] > 0
    assert 1 < final[0]["forward_perplexity"] < 69  # better than uniform over the 69-word vocabulary
    assert Elmo.from_directory(tmp_path / "export").embed_sentence(["A", "test", "."]).shape == (3, 3, 32)
