"""Shared fixtures: the golden TensorFlow fixtures (copied from ../shared, see their README), the nightly runs."""

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


@pytest.fixture(scope="session")
def nightly_runs(tmp_path_factory) -> dict:
    """A nightly pair on the tiny model, with ``--token_vectors``: day 1, then day 2 with ``--previous_run=latest``
    (both under ``out``, which has ``LATEST``), and a full day-2 run, each run's summary by name, plus the day-2
    input folder, the edit counts and the flags every run had (``flags``: give them to a run that should match).
    Shared by the nightly and search tests, which must not change it (copy ``out`` to add runs)."""
    from tests.beam_testing import run_job_summary
    from tests.nightly_data import day1_corpus, day2_corpus

    root = tmp_path_factory.mktemp("nightly")
    day1 = day1_corpus(root / "day1")
    day2 = root / "day2"
    edits = day2_corpus(day1, day2)
    out, flags = root / "out", ("--token_vectors",)
    one = run_job_summary(out, "--run_date=2026-11-01", *flags, input_glob=f"{day1}/*")
    two = run_job_summary(out, "--run_date=2026-11-02", "--previous_run=latest", *flags, input_glob=f"{day2}/*")
    full = run_job_summary(root / "full", "--run_date=2026-11-02", *flags, input_glob=f"{day2}/*")
    runs = {"day1": one, "day2": two, "full": full}
    return {"out": out, **runs, "edits": edits, "day2_input": day2, "flags": flags}


# The test session is an entry point like the commands: the storage clients' retry defaults, set explicitly.
configure_client_retries()

# One intra-op thread, as the pipeline's workers use (--torch_threads=1): the test models are tiny, so more threads
# only add synchronisation, and on a loaded machine spinning threads cost more than they compute. Results do not
# depend on it (batch-invariance tests compare with tolerances; bit-exact mode uses fixed GEMM chunks).
# ELMO_TEST_TORCH_THREADS=0 keeps torch's default.
TEST_TORCH_THREADS = int(os.environ.get("ELMO_TEST_TORCH_THREADS", "1"))
if TEST_TORCH_THREADS:
    torch.set_num_threads(TEST_TORCH_THREADS)
