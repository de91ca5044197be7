"""SortAndBatchByWeight: every element in exactly one batch, sorted, within the count and weight budgets."""

import itertools
import random

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that

from tests.beam_testing import local_pipeline
from transforms.batching import SortAndBatchByWeight, cut_sorted_batches


def test_batches_respect_both_budgets_and_keep_every_element():
    rng = random.Random(7)
    sizes = [rng.randint(1, 30) for _ in range(500)]
    batches = cut_sorted_batches(sizes, size_fn=lambda s: s, max_batch_size=16, max_batch_weight=100)
    flat = [s for b in batches for s in b]
    assert sorted(flat) == sorted(sizes)  # nothing lost, nothing duplicated
    assert flat == sorted(flat)  # sorted by size across batches
    assert all(len(b) <= 16 and sum(b) <= 100 for b in batches)
    # a batch is only cut when the next element would not fit
    for batch, following in itertools.pairwise(batches):
        assert len(batch) == 16 or sum(batch) + following[0] > 100


def test_an_element_over_the_budget_goes_alone():
    assert cut_sorted_batches([5, 500, 3], size_fn=lambda s: s, max_batch_size=8, max_batch_weight=10) == [
        [3, 5],
        [500],
    ]


def test_bad_budgets_are_rejected():
    with pytest.raises(ValueError, match="must be >= 1"):
        cut_sorted_batches([1], size_fn=len, max_batch_size=0, max_batch_weight=10)


def test_the_transform_batches_a_pcollection():
    words = [f"w{'x' * (i % 7)}" for i in range(60)]

    def check(batches):
        assert sorted(w for b in batches for w in b) == sorted(words)
        assert all(sum(len(w) for w in b) <= 20 for b in batches)

    with local_pipeline() as p:
        batches = p | beam.Create(words) | SortAndBatchByWeight(size_fn=len, max_batch_size=100, max_batch_weight=20)
        assert_that(batches, check)
