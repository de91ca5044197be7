"""Token-budget batching (Beam's SortAndBatchElements as EmbedWindows configures it): every element in exactly one
batch, sorted by length, within the count and inclusive weight budgets, and the handler's settings reach it."""

import itertools
import json
import random
import tempfile
from pathlib import Path

import apache_beam as beam
import pytest

from tests.beam_testing import local_pipeline
from tests.model_files import TINY_MODEL
from transforms.embed import sort_and_batch
from transforms.model_handler import ElmoModelHandler, window_tokens


def _batch(elements, max_batch_size, max_batch_weight, size_fn=lambda s: s):
    """The batches of one bundle holding ``elements``, in the order Beam cut them (written to a file, since
    the pipeline's matchers run on pickled copies)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "batches.json"
        with local_pipeline() as p:
            _ = (
                p
                | beam.Create([elements])  # one element holding all, split below: a single bundle, as in the job
                | beam.FlatMap(lambda xs: xs)
                | sort_and_batch(
                    max_batch_size=max_batch_size, max_batch_weight=max_batch_weight, element_size_fn=size_fn
                )
                | beam.combiners.ToList()
                | beam.Map(lambda batches, path=str(out): Path(path).write_text(json.dumps(batches)))
            )
        return json.loads(out.read_text())


def test_batches_respect_both_budgets_and_keep_every_element():
    rng = random.Random(7)
    sizes = [rng.randint(1, 30) for _ in range(500)]
    batches = sorted(_batch(sizes, max_batch_size=16, max_batch_weight=100), key=lambda b: (b[0], b[-1], -len(b)))
    flat = [s for b in batches for s in b]
    assert sorted(flat) == sorted(sizes)  # nothing lost, nothing duplicated
    assert all(b == sorted(b) for b in batches)  # sorted inside a batch
    assert all(len(b) <= 16 and sum(b) <= 100 for b in batches)
    # sorted across batches: consecutive batches do not overlap in size, and a batch is only cut when the next
    # element would not fit
    for batch, following in itertools.pairwise(batches):
        assert batch[-1] <= following[0]
        assert len(batch) == 16 or sum(batch) + following[0] > 100


def test_the_budget_is_inclusive_and_an_element_over_it_goes_alone():
    assert sorted(_batch([5, 5, 500, 3, 2], max_batch_size=8, max_batch_weight=10)) == [[2, 3, 5], [5], [500]]
    assert sorted(_batch([5, 5], max_batch_size=8, max_batch_weight=10)) == [[5, 5]]  # exactly the budget


def test_bad_budgets_are_rejected():
    with pytest.raises(ValueError, match="must be >= 1"):
        ElmoModelHandler(str(TINY_MODEL), max_batch_tokens=0)
    with pytest.raises(ValueError, match="must be >= 1"):
        ElmoModelHandler(str(TINY_MODEL), max_batch_windows=0)


def test_the_handler_hands_its_budget_and_sharing_to_beam():
    handler = ElmoModelHandler(str(TINY_MODEL), max_batch_tokens=97, max_batch_windows=5)
    assert handler.batch_elements_kwargs() == {
        "max_batch_size": 5,
        "max_batch_weight": 97,
        "element_size_fn": window_tokens,
    }
    assert not handler.share_model_across_processes() and handler.model_copies() == 1
    shared = ElmoModelHandler(str(TINY_MODEL), model_copies=2)
    assert shared.share_model_across_processes() and shared.model_copies() == 2
    assert ElmoModelHandler(str(TINY_MODEL), large_model=True).share_model_across_processes()
