"""The canonical initial LSTM state: one fixed state computed from a fixed warm-up text.

The published biLMs were trained on sentences packed back to back with the state carried over, so at inference
they are always "between two sentences": the original tools run statefully and advise warming the state up on a
few batches. The canonical state is that warmed-up state made deterministic: the final state (forward after
``</S>``, backward after ``<S>``) of running ``WARMUP_TEXT`` one sentence at a time, statefully, from zeros.
How far it and the zero state are from a warmed-up stateful run: ``python -m evaluation.initial_state``.
"""

from __future__ import annotations

import torch

from elmo.chars import batch_to_ids
from elmo.model import BiLm, BiLmState

# Plain, varied English; whitespace-tokenized like the models' training text.
WARMUP_TEXT = [
    "The committee met on Tuesday to discuss the new budget .",
    "She said that the results were better than expected , but more work is needed .",
    "In 1998 , the company moved its headquarters to a larger building near the river .",
    '" I do n\'t know , " he replied , looking out of the window .',
    "Scientists have found that the disease spreads more slowly in cold weather .",
    "The book tells the story of a family that lived on a small farm for three generations .",
    "Prices rose by 4 percent last year , the highest increase since 2008 .",
    "After the game , the players thanked the fans who had travelled to watch them .",
]


@torch.no_grad()
def canonical_state(bilm: BiLm, warmup: list[str] | None = None) -> BiLmState:
    """Runs the warm-up sentences (whitespace-tokenized strings, default ``WARMUP_TEXT``) through ``bilm`` one at
    a time, each from the previous one's final state, the first from zeros; returns the last final state
    (2, L, 1, ·), on the model's device. Raises ``ValueError`` for a warm-up sentence without tokens."""
    width = bilm.config.char_cnn.max_characters_per_token
    device = bilm.char_encoder.char_embedding.weight.device
    state: BiLmState | None = None
    for i, sentence in enumerate(WARMUP_TEXT if warmup is None else warmup):
        tokens = sentence.split()
        if not tokens:
            raise ValueError(f"warm-up sentence {i} is empty: every sentence needs at least one token")
        ids = torch.from_numpy(batch_to_ids([tokens], width)).to(device)
        _, state = bilm(ids, state)
    if state is None:
        raise ValueError("the warm-up text has no sentences")
    return BiLmState(state.h.clone(), state.c.clone())
