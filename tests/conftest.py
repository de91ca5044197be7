"""Shared fixtures: paths of the golden TensorFlow fixtures copied from ../shared (see their README)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from elmo.retries import configure_client_retries

GOLDEN = Path(__file__).parent / "fixtures" / "elmo-golden"
GOLDEN_SENTENCE_FILES = {"skip": "sentences.json", "noskip": "lm_embeddings_sentences.json"}


def golden_batches(name: str) -> list[list[list[str]]]:
    """The fixture's 10 batches of 3 tokenized sentences, in the order TensorFlow ran them."""
    lists = json.loads((GOLDEN / name / GOLDEN_SENTENCE_FILES[name]).read_text())
    return [[lists[k][i].split() for k in range(3)] for i in range(10)]


@pytest.fixture(params=["skip", "noskip"])
def golden_model(request) -> tuple[str, Path]:
    """(name, directory) of each golden fixture model."""
    return request.param, GOLDEN / request.param


# The test session is an entry point like the commands: the storage clients' retry defaults, set explicitly.
configure_client_retries()

# One intra-op thread, as the pipeline's workers use (--torch_threads=1): the test models are tiny, so more threads
# only add synchronisation, and on a loaded machine spinning threads cost more than they compute. Results do not
# depend on it (batch-invariance tests compare with tolerances; bit-exact mode uses fixed GEMM chunks).
# ELMO_TEST_TORCH_THREADS=0 keeps torch's default.
TEST_TORCH_THREADS = int(os.environ.get("ELMO_TEST_TORCH_THREADS", "1"))
if TEST_TORCH_THREADS:
    torch.set_num_threads(TEST_TORCH_THREADS)
