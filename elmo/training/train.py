"""``python -m elmo.training.train``: train a biLM (Peters et al. 2018) and export it in the official layout.

Objective: forward and backward LMs over the shared char-CNN token encoder, jointly minimising the mean of both
negative log likelihoods with one softmax shared across directions (bilm-tf). Recipe (bilm-tf, ``--recipe
bilm-tf``): sampled softmax, dropout 0.1, Adagrad lr 0.2, global-norm gradient clipping at 10, windows of 20
unrolled steps with the LSTM state carried between windows. Documented deviations: fused unclipped LSTMs (see
``elmo.training.model``) and, by default, Adam (``--optimizer adam``), which converges faster on short CPU
budgets.

Resume is exact: every step re-seeds the RNG from (seed, step), the data window is a function of the step, and
checkpoints hold the model, optimizer, carried LSTM state and step, so a resumed run's loss curve equals an
uninterrupted one. Checkpoints hold plain data only (tensors, dicts, lists, numbers, strings) and are read with
torch's safe ``weights_only`` unpickler: a checkpoint that would need unsafe unpickling (it could run code) is
refused with ``CheckpointError``, never loaded.

Multi-GPU: ``torchrun --nproc_per_node=N -m elmo.training.train ...`` (DDP; each rank reads its own lanes of the
stream). On CPU a single process (DDP with gloo works too, for tests).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import pickle
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from elmo import model_cache, storage
from elmo.api import Elmo, validate_device
from elmo.bf16 import bf16_refusal
from elmo.cli import add_debug_flag, run_cli
from elmo.config import CharCNNConfig, ElmoConfig, LSTMConfig
from elmo.errors import ConfigError, UsageError
from elmo.model_dir import OPTIONS_FILE
from elmo.retries import configure_client_retries
from elmo.training.data import PackedCorpus, WindowBatcher, read_sentences
from elmo.training.model import TrainableBiLm, export_bilm, import_bilm
from elmo.training.vocab import Vocabulary
from elmo.weights import save_weights

PROG = "python -m elmo.training.train"
CHECKPOINT_KEYS = ("config", "state_dict", "optimizer", "step", "lstm_state", "history")
# The settings that make a run what it is: a resumed run takes them from its checkpoint, and a command that says
# otherwise is refused (it would silently continue as another run). The rest can change between sessions: how
# long to train (max_steps, max_hours; with --final-learning-rate the remaining schedule follows max_steps), how
# often to log, evaluate and checkpoint, threads, bf16 autocast (the state is float32 either way), and the paths
# (the corpus and vocabulary may move with the machine; their content is checked instead).
RUN_SETTINGS = (
    "batch_size",
    "unroll_steps",
    "n_negative_samples",
    "dropout",
    "optimizer",
    "learning_rate",
    "final_learning_rate",
    "clip_norm",
    "seed",
    "softmax_warmup_steps",
    "model",
)


class CheckpointError(ConfigError):
    """A training checkpoint is missing, unreadable, incomplete, or would need unsafe (code-running) unpickling."""


def plain_data(value: object) -> object:
    """``value`` with only types torch's ``weights_only`` unpickler accepts: tensors, dicts, lists, tuples, str,
    int, float, bool, None (numpy arrays become tensors, numpy scalars Python numbers, dataclasses dicts)."""
    if isinstance(value, dict):
        return {plain_data(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain_data(v) for v in value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__dataclass_fields__"):
        return plain_data(asdict(value))
    if value is None or isinstance(value, (torch.Tensor, str, int, float, bool)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint: convert it to plain data")


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Loads a training checkpoint (a local path, or a gs:// / s3:// URL: fetched to a temporary file first) with
    torch's safe unpickler (``weights_only=True``) and checks its keys.

    Raises ``CheckpointError`` naming the file when it does not exist, is not a torch checkpoint, lacks a key, or
    holds anything beyond plain data (e.g. a pickled object that would run code): such a file is never loaded.
    """
    path = os.fspath(path)
    if storage.is_remote(path):
        if not storage.exists(path):
            raise CheckpointError(f"checkpoint {path} does not exist")
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "checkpoint.pt")
            storage.download_file(path, local)
            return read_checkpoint(local, map_location)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        saved = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if not found:
            raise CheckpointError(
                f"checkpoint {path} is not a readable torch checkpoint (the safe unpickler rejected it)"
            ) from None
        raise CheckpointError(
            f"refusing checkpoint {path}: it holds more than plain data (it refers to {found.group(1)}), and "
            "unpickling it could run code; only checkpoints of tensors, dicts, lists, numbers and strings are loaded"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"checkpoint {path} is not a readable torch checkpoint: {first}") from None
    if not isinstance(saved, dict) or any(key not in saved for key in CHECKPOINT_KEYS):
        have = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise CheckpointError(
            f"checkpoint {path} is not a training checkpoint: expected keys {CHECKPOINT_KEYS}, found {have}"
        )
    return saved


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in every checkpoint)."""

    train: str = ""  # glob of training shards (one tokenized sentence per line)
    heldout: str = ""  # glob of held-out shards
    vocab: str = ""  # bilm-tf vocabulary file
    out: str = "runs/bilm"  # checkpoint and export directory
    batch_size: int = 64  # lanes per process
    unroll_steps: int = 20  # W
    max_steps: int = 1000
    n_negative_samples: int = 4096  # 0 = full softmax
    dropout: float = 0.1
    optimizer: str = "adam"  # adam | adagrad (bilm-tf)
    learning_rate: float = 2e-3
    final_learning_rate: float = 0.0  # > 0: the rate falls linearly from learning_rate to this at max_steps
    clip_norm: float = 10.0
    seed: int = 0
    checkpoint_every: int = 200
    eval_every: int = 500
    eval_tokens: int = 200_000  # cap on held-out tokens per evaluation (per direction)
    log_every: int = 20
    threads: int = 0  # torch threads on CPU (0 = torch default)
    max_hours: float = 0.0  # stop (after a checkpoint) when this much wall time has passed; 0 = no limit
    init_from: str = ""  # model directory whose char CNN and LSTMs a new run starts from (the softmax starts fresh)
    softmax_warmup_steps: int = 0  # first steps train only the softmax (the network is frozen and run without grad)
    bf16: bool = False  # bfloat16 autocast of the forward pass (AMX CPUs, GPUs); float32 weights and optimizer state
    model: dict = field(default_factory=dict)  # options.json of the model


def small_english_config() -> ElmoConfig:
    """The built-in model's shape: sized for fast CPU inference (2P = 256)."""
    return ElmoConfig(
        char_cnn=CharCNNConfig(embedding_dim=16, filters=[[1, 32], [2, 32], [3, 64], [4, 128], [5, 256]], n_highway=1),
        lstm=LSTMConfig(
            dim=512, projection_dim=128, n_layers=2, cell_clip=None, proj_clip=None, use_skip_connections=True
        ),
    )


class Trainer:
    """Owns the model, optimizer, data and carried state of one process of a training run."""

    def __init__(self, config: TrainConfig, device: torch.device):
        self.config = config
        self.device = device
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.vocab = Vocabulary.load(config.vocab)
        self.model_config = ElmoConfig.from_dict(config.model)
        torch.manual_seed(config.seed)
        self.model = TrainableBiLm(self.model_config, len(self.vocab), config.dropout).to(device)
        self.ddp = DistributedDataParallel(self.model) if self.world > 1 else None
        if config.optimizer == "adagrad":
            self.optimizer = torch.optim.Adagrad(
                self.model.parameters(), lr=config.learning_rate, initial_accumulator_value=1.0
            )
        elif config.optimizer == "adam":
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)
        else:
            raise ValueError(f"unknown optimizer {config.optimizer!r}")
        corpus = PackedCorpus(read_sentences(config.train), self.vocab, shuffle_seed=config.seed)
        self.batcher = WindowBatcher(corpus, config.batch_size, config.unroll_steps, self.rank, self.world)
        self.state = self.model.zero_state(config.batch_size)
        self.step = 0
        self.history: list[dict] = []

    # -- checkpoints -------------------------------------------------------------------------------------------
    def checkpoint_path(self) -> str:
        """Where this rank's latest checkpoint lives: under ``--out``, a local folder or a gs:// / s3:// prefix (on a
        store, the run's whole state outlives the machine that trains it)."""
        return storage.join(self.config.out, f"checkpoint-rank{self.rank}.pt")

    def save_checkpoint(self) -> None:
        """Writes {config, state_dict, optimizer, step, carried state, history} atomically: locally by renaming a
        finished file, on a store by uploading a finished file (an object appears whole or not at all)."""
        checkpoint = {
            "config": asdict(self.config),
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "lstm_state": [t.cpu() for t in self.state],
            "history": self.history,
            "data": self.data_identity(),
        }
        target = self.checkpoint_path()
        if storage.is_remote(target):
            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, "checkpoint.pt")
                torch.save(plain_data(checkpoint), local)  # loadable with weights_only=True
                storage.upload_file(local, target)
            return
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(plain_data(checkpoint), tmp)
        os.replace(tmp, path)

    @functools.cached_property
    def _data_identity(self) -> dict:
        corpus = self.batcher.corpus
        text = hashlib.sha256(corpus.forward_stream.tobytes())  # sentence order and token types
        text.update(np.ascontiguousarray(corpus.type_chars).tobytes())  # which token each type is
        return {
            "train_sentences": corpus.n_sentences,
            "train_tokens": corpus.n_tokens,
            "train_sha256": text.hexdigest(),
            "vocab_sha256": hashlib.sha256("\n".join(self.vocab.tokens).encode("utf-8")).hexdigest(),
        }

    def data_identity(self) -> dict:
        """What a resumed run must read again to continue exactly: the packed training text (its sentences in the
        run's order, token types and their characters) and the vocabulary, as sizes and SHA-256 digests."""
        return dict(self._data_identity)

    def load_checkpoint(self, saved: dict | None = None) -> bool:
        """Restores ``saved`` (read by ``read_resume_checkpoint``) or else the latest checkpoint if there is one;
        returns whether it did. ``read_checkpoint`` refuses unsafe or malformed files with ``CheckpointError``,
        and so does a checkpoint made from other training text or another vocabulary (checkpoints written
        before this check carry no ``data`` and are not checked)."""
        if saved is None:
            target = self.checkpoint_path()
            if not storage.exists(target):
                return False
            saved = read_checkpoint(target, map_location=self.device)
        then, now = saved.get("data"), self.data_identity()
        if then is not None and then != now:
            changed = ", ".join(
                f"{k} {str(then.get(k))[:12]} then, {str(now[k])[:12]} now" for k in now if then.get(k) != now[k]
            )
            raise CheckpointError(
                f"the checkpoint in {self.config.out} was trained on other data ({changed}): resuming would not "
                "continue that run; give it the same --train and --vocab, or train into a new --out"
            )
        self.model.load_state_dict(saved["state_dict"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.step = saved["step"]
        self.state = tuple(t.to(self.device) for t in saved["lstm_state"])
        self.history = saved["history"]
        return True

    # -- training ----------------------------------------------------------------------------------------------
    def start_from_model(self) -> None:
        """Copies ``init_from``'s char CNN and LSTMs into the fresh model (a new run only; a resumed run has its
        checkpoint)."""
        import_bilm(self.model, Elmo.from_directory(self.config.init_from).bilm.to(self.device))

    def learning_rate_at(self, step: int) -> float:
        """The schedule, a function of the step only (so resume is exact): constant, or with
        ``final_learning_rate`` a linear fall to it at ``max_steps``."""
        config = self.config
        if not config.final_learning_rate or not config.max_steps:
            return config.learning_rate
        progress = min(step / config.max_steps, 1.0)
        return config.learning_rate + (config.final_learning_rate - config.learning_rate) * progress

    def train_step(self) -> float:
        """One window of both directions; returns the mean of the two directions' losses. During the softmax
        warm-up (``softmax_warmup_steps``) the network runs without gradients and only the softmax learns."""
        config = self.config
        torch.manual_seed(config.seed * 1_000_003 + self.step * 7919 + self.rank)  # exact resume
        if self.step > 0 and self.batcher.epoch_of(self.step) != self.batcher.epoch_of(self.step - 1):
            self.state = self.model.zero_state(config.batch_size)
        batch = self.batcher.batch(self.step)
        to = lambda a: torch.from_numpy(a).to(self.device)  # noqa: E731
        self.model.train()
        warming_up = self.step < config.softmax_warmup_steps
        network = self.model if warming_up else (self.ddp or self.model)
        with self.autocast():
            with torch.set_grad_enabled(not warming_up):
                tops, h, c = network(
                    to(batch.token_chars), to(batch.forward_tokens), to(batch.backward_tokens), self.state
                )  # (2, B, W, P)
            losses = []
            for direction, targets in enumerate((batch.forward_targets, batch.backward_targets)):
                top = tops[direction].reshape(-1, tops.shape[-1])
                flat_targets = to(targets).reshape(-1)
                if config.n_negative_samples:
                    losses.append(self.model.sampled_softmax_loss(top, flat_targets, config.n_negative_samples))
                else:
                    losses.append(self.model.full_softmax_loss(top, flat_targets))
            loss = 0.5 * (losses[0].float() + losses[1].float())
        # the carried state stays float32 between windows (and in checkpoints), whatever the autocast computed in
        self.state = (h.detach().float(), c.detach().float())
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate_at(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.clip_norm)
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def autocast(self) -> torch.autocast:
        """bfloat16 autocast of the forward pass with ``bf16`` (GEMMs and the LSTMs in bfloat16; parameters,
        gradients and optimizer state stay float32), a no-op without it."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16)

    def evaluate(self) -> dict[str, float]:
        """Held-out perplexity per direction on up to ``eval_tokens`` tokens."""
        return heldout_perplexity(
            self.model, self.vocab, self.config.heldout, self.config.unroll_steps, self.config.eval_tokens, self.device
        )

    def run(self, saved: dict | None = None) -> None:
        """Trains to ``max_steps`` (or ``max_hours``), logging, evaluating and checkpointing as configured,
        resuming from ``saved`` (``read_resume_checkpoint``) or from the checkpoint under ``--out``."""
        config = self.config
        resumed = self.load_checkpoint(saved)
        if not resumed and config.init_from:
            self.start_from_model()
        if self.rank == 0:
            print(
                f"{'resumed at' if resumed else 'starting at'} step {self.step}; {self.batcher.corpus.n_tokens:,} "
                f"tokens/direction, {self.batcher.steps_per_epoch} steps/epoch, vocab {len(self.vocab):,}",
                file=sys.stderr,
            )
        started = time.perf_counter()
        first_step = self.step
        tokens_per_step = config.batch_size * config.unroll_steps * self.world
        while self.step < config.max_steps:
            loss = self.train_step()
            record = {"step": self.step, "loss": loss}
            elapsed = time.perf_counter() - started
            if self.step % config.eval_every == 0 or self.step == config.max_steps:
                if config.heldout and self.rank == 0:
                    record.update(self.evaluate())
            self.history.append(record)
            if self.rank == 0 and (self.step % config.log_every == 0 or "forward_perplexity" in record):
                rate = (self.step - first_step) * tokens_per_step / max(elapsed, 1e-9)
                eta = (config.max_steps - self.step) * tokens_per_step / max(rate, 1e-9)
                extra = ""
                if "forward_perplexity" in record:
                    extra = (
                        f" | held-out ppl fwd {record['forward_perplexity']:.1f} "
                        f"bwd {record['backward_perplexity']:.1f}"
                    )
                print(
                    f"step {self.step}/{config.max_steps} ({100 * self.step / config.max_steps:.1f}%) | "
                    f"loss {loss:.3f} | {rate:,.0f} tokens/s | ETA {eta / 60:.1f} min{extra}",
                    file=sys.stderr,
                    flush=True,
                )
            out_of_time = config.max_hours and elapsed > config.max_hours * 3600
            if self.step % config.checkpoint_every == 0 or self.step == config.max_steps or out_of_time:
                self.save_checkpoint()
            if out_of_time:
                print(f"stopping at step {self.step}: --max-hours reached", file=sys.stderr)
                break

    def export(self, directory: str) -> None:
        """Writes the official layout plus vocab.txt and training.json (see ``export_model``)."""
        export_model(self.model, self.vocab, directory, asdict(self.config), self.step, self.history)


@torch.no_grad()
def heldout_perplexity(
    model: TrainableBiLm, vocab: Vocabulary, pattern: str, unroll: int, max_tokens: int, device: torch.device
) -> dict[str, float]:
    """Perplexity per direction: full softmax, one lane of the held-out text in file order, state carried.

    Every target counts, ``</S>`` (forward) and ``<S>`` (backward) included, as in bilm-tf; OOV targets are
    ``<UNK>``. Returns forward_perplexity, backward_perplexity and heldout_tokens (targets per direction).
    """
    model.eval()
    corpus = PackedCorpus(read_sentences(pattern), vocab, shuffle_seed=None)
    streams = {0: corpus.forward_stream, 1: corpus.backward_stream}
    total = {0: 0.0, 1: 0.0}
    count = 0
    h, c = model.zero_state(1)
    limit = min(corpus.n_tokens - 1, max_tokens) if max_tokens else corpus.n_tokens - 1
    for start in range(0, limit - unroll + 1, unroll):
        new_h, new_c = [], []
        for direction in (0, 1):
            window = streams[direction][start : start + unroll + 1]
            chars = torch.from_numpy(corpus.type_chars[window[:-1]]).unsqueeze(0).to(device)
            targets = torch.from_numpy(corpus.type_targets[window[1:]]).to(device)
            layers, h_d, c_d = model.run_direction(direction, model.encode_tokens(chars), h[direction], c[direction])
            total[direction] += float(model.full_softmax_loss(layers[-1][0], targets)) * unroll
            new_h.append(h_d)
            new_c.append(c_d)
        h, c = torch.stack(new_h), torch.stack(new_c)
        count += unroll
    return {
        "forward_perplexity": math.exp(total[0] / count),
        "backward_perplexity": math.exp(total[1] / count),
        "heldout_tokens": count,
    }


def export_model(
    model: TrainableBiLm, vocab: Vocabulary, directory: str, train_config: dict, step: int, history: list[dict]
) -> None:
    """Writes options.json, weights.hdf5 (official layout), vocab.txt and training.json into ``directory`` (a local
    folder, or a ``gs://`` / ``s3://`` prefix: written locally first, then uploaded file by file)."""
    if storage.is_remote(directory):
        with tempfile.TemporaryDirectory() as tmp:
            export_model(model, vocab, tmp, train_config, step, history)
            for name in sorted(os.listdir(tmp)):
                storage.upload_file(os.path.join(tmp, name), storage.join(directory, name))
        return
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    bilm = export_bilm(model.cpu().float())
    (out / "options.json").write_text(model.config.to_json() + "\n")
    save_weights(bilm, str(out / "weights.hdf5"))
    vocab.save(str(out / "vocab.txt"))
    summary = {
        "config": train_config,
        "steps": step,
        "history_tail": history[-5:],
        "evaluations": [r for r in history if "forward_perplexity" in r],
    }
    (out / "training.json").write_text(json.dumps(summary, indent=1) + "\n")


def export_checkpoint(checkpoint: str, directory: str, heldout: str = "") -> None:
    """Exports a training checkpoint without loading its corpus; with ``heldout``, evaluates all of it first and
    records the perplexities in training.json (``final_evaluation``)."""
    saved = read_checkpoint(checkpoint)
    config = saved["config"]
    vocab = Vocabulary.load(config["vocab"])
    model_config = ElmoConfig.from_dict(config["model"], source=f"{checkpoint} (model options)")
    model = TrainableBiLm(model_config, len(vocab), config["dropout"])
    model.load_state_dict(saved["state_dict"])
    history = list(saved["history"])
    if heldout:
        final = heldout_perplexity(model, vocab, heldout, config["unroll_steps"], 0, torch.device("cpu"))
        history.append({"step": saved["step"], "final_evaluation": True, **final})
        print(
            f"held-out perplexity: forward {final['forward_perplexity']:.1f}, backward "
            f"{final['backward_perplexity']:.1f} over {final['heldout_tokens']:,} tokens",
            file=sys.stderr,
        )
    export_model(model, vocab, directory, config, saved["step"], history)


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags (each maps to a ``TrainConfig`` field)."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = TrainConfig()
    parser.add_argument("--train", default="", help="glob of training shards (local, gs://, s3://)")
    parser.add_argument("--heldout", default="", help="glob of held-out shards for perplexity")
    parser.add_argument("--vocab", default="", help="vocabulary file (bilm-tf format)")
    parser.add_argument(
        "--export-checkpoint",
        default="",
        metavar="CHECKPOINT",
        help="only export this checkpoint to --export (no training, no corpus read)",
    )
    parser.add_argument("--out", default=defaults.out, help="checkpoint directory")
    parser.add_argument("--export", default="", help="export the model here when training ends")
    parser.add_argument("--options", default="", help="options.json of the model to train (default: small)")
    parser.add_argument(
        "--init-from",
        default="",
        metavar="MODEL_DIR",
        help="start a new run from this model directory's char CNN and LSTMs (its options.json sets the shape; "
        "the softmax starts fresh: see --softmax-warmup-steps); e.g. continue the built-in model on more text",
    )
    parser.add_argument(
        "--recipe",
        choices=["default", "bilm-tf"],
        default="default",
        help="bilm-tf = Adagrad lr 0.2, 8192 negatives, batch 128 (the published recipe)",
    )
    for name in (
        "batch_size",
        "unroll_steps",
        "max_steps",
        "n_negative_samples",
        "seed",
        "checkpoint_every",
        "eval_every",
        "eval_tokens",
        "log_every",
        "threads",
        "softmax_warmup_steps",
    ):
        parser.add_argument(
            "--" + name.replace("_", "-"), type=int, default=None, help=f"default {getattr(defaults, name)}"
        )
    for name in ("dropout", "learning_rate", "final_learning_rate", "clip_norm", "max_hours"):
        parser.add_argument(
            "--" + name.replace("_", "-"), type=float, default=None, help=f"default {getattr(defaults, name)}"
        )
    parser.add_argument("--optimizer", choices=["adam", "adagrad"], default=None, help="default adam")
    parser.add_argument(
        "--bf16",
        action="store_true",
        default=None,
        help="bfloat16 autocast of the forward pass: GPUs and CPUs with AMX only (refused elsewhere, where it is "
        "slower); weights, gradients and optimizer state stay float32; held-out evaluation runs in float32",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_debug_flag(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Flags -> TrainConfig (recipe defaults first, explicit flags override)."""
    config = TrainConfig(
        train=args.train, heldout=args.heldout, vocab=args.vocab, out=args.out, init_from=args.init_from
    )
    if args.recipe == "bilm-tf":
        config.optimizer, config.learning_rate, config.n_negative_samples, config.batch_size = "adagrad", 0.2, 8192, 128
    for name in asdict(config):
        value = getattr(args, name, None)
        if value is not None and name not in ("train", "heldout", "vocab", "out", "init_from"):
            setattr(config, name, value)
    if args.init_from and args.options:
        raise UsageError("--init-from takes the model's shape from its options.json: leave out --options")
    if args.init_from:
        model = ElmoConfig.from_json(model_cache.local_file(storage.join(args.init_from, OPTIONS_FILE)))
    elif args.options:
        model = ElmoConfig.from_json(model_cache.local_file(args.options))
    else:
        model = small_english_config()
    config.model = model.to_dict()
    check_train_config(config)
    return config


def explicit_settings(args: argparse.Namespace) -> set[str]:
    """The ``TrainConfig`` fields the command line set: flags given, the fields a ``--recipe`` sets, and ``model``
    when ``--options`` or ``--init-from`` says the shape."""
    given = {name for name in asdict(TrainConfig()) if getattr(args, name, None) is not None}
    if args.recipe == "bilm-tf":
        given |= {"optimizer", "learning_rate", "n_negative_samples", "batch_size"}
    if args.options or args.init_from:
        given.add("model")
    return given


def read_resume_checkpoint(out: str, rank: int) -> dict | None:
    """This rank's checkpoint under ``out`` in CPU memory (restoring copies it to the rank's device), or None when
    the run is new."""
    target = storage.join(out, f"checkpoint-rank{rank}.pt")
    return read_checkpoint(target, map_location="cpu") if storage.exists(target) else None


def resumed_config(config: TrainConfig, saved: dict, explicit: set[str]) -> TrainConfig:
    """The config a resumed run continues with: ``RUN_SETTINGS`` from the checkpoint's config ``saved``, the rest
    from the command line. Raises ``UsageError`` listing every run setting the command line set to another value
    than the checkpoint's (it would not continue that run)."""
    conflicts = []
    for name in RUN_SETTINGS:
        if name not in saved:
            continue
        if name in explicit and getattr(config, name) != saved[name]:
            flag = "--options/--init-from (the model shape)" if name == "model" else "--" + name.replace("_", "-")
            shown = "" if name == "model" else f": {saved[name]} there, {getattr(config, name)} here"
            conflicts.append(f"{flag}{shown}")
        setattr(config, name, saved[name])
    if conflicts:
        raise UsageError(
            f"{config.out} holds a checkpoint of a run with other settings ({'; '.join(conflicts)}): leave these "
            "flags out to continue that run with its own settings, or train into a new --out"
        )
    check_train_config(config)
    return config


def check_train_config(config: TrainConfig) -> None:
    """Raises ``UsageError`` naming the flag of a value training cannot use (sizes < 1, a dropout outside [0, 1),
    a non-finite or non-positive learning rate or clip norm, ...)."""
    minimums = {
        "batch_size": 1, "unroll_steps": 1, "max_steps": 0, "n_negative_samples": 0, "checkpoint_every": 1,
        "eval_every": 1, "eval_tokens": 0, "log_every": 1, "threads": 0, "seed": 0, "softmax_warmup_steps": 0,
    }  # fmt: skip
    for name, minimum in minimums.items():
        if getattr(config, name) < minimum:
            raise UsageError(f"--{name.replace('_', '-')} must be at least {minimum}, not {getattr(config, name)}")
    for name in ("learning_rate", "clip_norm"):
        value = getattr(config, name)
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive finite number, not {value}")
    if not math.isfinite(config.final_learning_rate) or config.final_learning_rate < 0:
        raise UsageError(
            f"--final-learning-rate must be a finite number >= 0 (0 = constant rate), not {config.final_learning_rate}"
        )
    if not 0 <= config.dropout < 1:
        raise UsageError(f"--dropout must be in [0, 1), not {config.dropout}")
    if not math.isfinite(config.max_hours) or config.max_hours < 0:
        raise UsageError(f"--max-hours must be a finite number >= 0 (0 = no limit), not {config.max_hours}")


def world_size() -> int:
    """Processes of a ``torchrun`` launch (1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def main(argv: list[str] | None = None) -> int:
    """Trains (resuming from ``--out`` if a checkpoint is there), then exports if ``--export`` is given.

    Returns the exit status: bad flags, options, checkpoints or devices print one line and give 2 (``--debug``:
    the traceback)."""
    configure_client_retries()  # before any storage client exists
    return run_cli(_main, argv, prog=PROG)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        device = validate_device(args.device)
    except ConfigError as err:
        raise UsageError(f"--device: {err}") from None
    if args.export_checkpoint:
        if not args.export:
            raise UsageError("--export-checkpoint needs --export DIR")
        export_checkpoint(args.export_checkpoint, args.export, args.heldout)
        print(f"exported {args.export_checkpoint} to {args.export}", file=sys.stderr)
        return 0
    if not (args.train and args.vocab):
        raise UsageError("--train and --vocab are required for training")
    config = config_from_args(args)
    saved = read_resume_checkpoint(config.out, int(os.environ.get("RANK", "0")))
    if saved is not None:
        config = resumed_config(config, saved["config"], explicit_settings(args))
    refusal = bf16_refusal(device) if config.bf16 else None
    if refusal:
        raise UsageError(f"--bf16: {refusal}; leave it off (float32) on this machine")
    if world_size() > 1 and config.softmax_warmup_steps:
        raise UsageError("--softmax-warmup-steps runs on one process only (its softmax updates are not all-reduced)")
    if config.threads:
        torch.set_num_threads(config.threads)
    world = world_size()
    if world > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    trainer = Trainer(config, device)
    trainer.run(saved)
    if args.export and trainer.rank == 0:
        trainer.export(args.export)
        print(f"exported to {args.export}", file=sys.stderr)
    if world > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
