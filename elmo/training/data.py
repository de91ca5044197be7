"""Language-model training data as bilm-tf packs it: sentences wrapped in ``<S> … </S>`` and laid back to back in
``batch_size`` parallel streams, read in windows of ``unroll_steps`` tokens with the LSTM state carried between
windows. The backward LM reads the same text reversed.

Everything is addressed by step number, so a run resumed at step k sees exactly the windows it would have seen:
window ``k`` of stream ``b`` is ``stream_b[k*W : k*W + W + 1]`` (inputs are the first W, targets the last W).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import fsspec
import numpy as np

from elmo.chars import BOS_TOKEN, EOS_TOKEN, tokens_to_ids
from elmo.training.vocab import Vocabulary


def read_sentences(pattern: str) -> Iterator[list[str]]:
    """Whitespace-tokenized sentences from every file matching ``pattern`` (local, gs://, s3://; .gz ok),
    files in sorted order, blank lines skipped."""
    files = sorted(fsspec.open_files(pattern, "rt", encoding="utf-8", compression="infer"), key=lambda f: f.path)
    if not files:
        raise FileNotFoundError(f"no training files match {pattern!r}")
    for opened in files:
        with opened as f:
            for line in f:
                tokens = line.split()
                if tokens:
                    yield tokens


@dataclass
class Batch:
    """One training step for both directions: the char ids of the step's distinct token types (U, C), each position's
    index into them (B, W) and the target word ids (B, W) per direction. Both directions share one list of types, so
    the char CNN encodes each type once per step."""

    token_chars: np.ndarray  # (U, C)
    forward_tokens: np.ndarray  # (B, W) int64, rows of token_chars
    forward_targets: np.ndarray  # (B, W) int64
    backward_tokens: np.ndarray
    backward_targets: np.ndarray


class PackedCorpus:
    """A corpus held as one int32 stream of token-type ids; each type has char ids and a target word id."""

    def __init__(
        self, sentences: Iterable[list[str]], vocab: Vocabulary, shuffle_seed: int | None = 0, max_characters: int = 50
    ):
        types: dict[str, int] = {BOS_TOKEN: 0, EOS_TOKEN: 1}
        encoded: list[np.ndarray] = []
        for sentence in sentences:
            ids = [types.setdefault(t, len(types)) for t in sentence]
            encoded.append(np.asarray([0, *ids, 1], dtype=np.int32))
        if not encoded:
            raise ValueError("the corpus is empty")
        if shuffle_seed is not None:  # one fixed sentence order (bilm-tf shuffles sentences within shards)
            random.Random(shuffle_seed).shuffle(encoded)
        names = list(types)
        self.type_chars = tokens_to_ids(names, max_characters)  # (types, C)
        self.type_targets = np.asarray([vocab.id(t) for t in names], dtype=np.int64)  # (types,)
        self.forward_stream = np.concatenate(encoded)
        self.backward_stream = np.concatenate([s[::-1] for s in reversed(encoded)])
        self.n_sentences = len(encoded)

    @property
    def n_tokens(self) -> int:
        """Tokens in one direction's stream, boundaries included."""
        return len(self.forward_stream)


class WindowBatcher:
    """Cuts both streams into ``batch_size`` contiguous lanes and serves window ``step`` of every lane.

    Lane b of the forward stream reads tokens ``[b*L, (b+1)*L)``; the backward lanes are the same split of the
    reversed stream. Steps past the end of a lane wrap to the next epoch (``epoch_of(step)`` tells which, so the
    trainer resets the carried state there). ``rank``/``world_size`` give each data-parallel worker its own lanes.
    """

    def __init__(self, corpus: PackedCorpus, batch_size: int, unroll_steps: int, rank: int = 0, world_size: int = 1):
        total_lanes = batch_size * world_size
        lane_length = (corpus.n_tokens - 1) // total_lanes
        if lane_length < unroll_steps:
            raise ValueError(
                f"corpus of {corpus.n_tokens} tokens is too small for {total_lanes} lanes of "
                f"{unroll_steps}-token windows"
            )
        self.corpus = corpus
        self.unroll = unroll_steps
        self.steps_per_epoch = lane_length // unroll_steps
        usable = self.steps_per_epoch * unroll_steps
        starts = (np.arange(batch_size) + rank * batch_size) * lane_length  # (B,)
        offsets = starts[:, None] + np.arange(usable + 1)[None, :]  # (B, usable + 1)
        self.forward_lanes = corpus.forward_stream[offsets]  # (B, usable + 1) type ids
        self.backward_lanes = corpus.backward_stream[offsets]

    def epoch_of(self, step: int) -> int:
        """The epoch a step falls in (0-based)."""
        return step // self.steps_per_epoch

    def batch(self, step: int) -> Batch:
        """The windows of training step ``step`` (deterministic)."""
        start = (step % self.steps_per_epoch) * self.unroll
        window = slice(start, start + self.unroll)
        target = slice(start + 1, start + self.unroll + 1)
        c = self.corpus
        inputs = np.stack([self.forward_lanes[:, window], self.backward_lanes[:, window]])  # (2, B, W) type ids
        types, positions = np.unique(inputs, return_inverse=True)  # (U,), (2 * B * W,)
        positions = positions.reshape(inputs.shape).astype(np.int64)
        return Batch(
            token_chars=c.type_chars[types],
            forward_tokens=positions[0],
            forward_targets=c.type_targets[self.forward_lanes[:, target]],
            backward_tokens=positions[1],
            backward_targets=c.type_targets[self.backward_lanes[:, target]],
        )
