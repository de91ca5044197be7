"""Token-budget batching (SortAndBatchBounded as EmbedWindows configures it): every element in exactly one batch,
sorted by length, within the count and inclusive weight budgets, a bounded sorting buffer however large the bundle,
and the handler's settings reach it."""

import itertools
import json
import random
import tempfile
from pathlib import Path

import apache_beam as beam
import pytest

from tests.beam_testing import local_pipeline
from tests.model_files import TINY_MODEL
from transforms.batching import BUFFER_BATCHES, SortAndBatchBounded, _SortAndBatchFn, cut_sorted_batches
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
                | SortAndBatchBounded(
                    max_batch_size=max_batch_size, max_batch_weight=max_batch_weight, element_size_fn=size_fn
                )
                | beam.combiners.ToList()
                | beam.Map(lambda batches, path=str(out): Path(path).write_text(json.dumps(batches)))
            )
        return json.loads(out.read_text())


def test_batches_respect_both_budgets_and_keep_every_element():
    rng = random.Random(7)
    sizes = [rng.randint(1, 30) for _ in range(250)]  # ~3,900 in weight: one buffer (64 x 100), sorted as a whole
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


def test_a_bundle_larger_than_the_buffer_is_sorted_and_cut_in_bounded_pieces():
    """Flink makes a partition one bundle: the buffer is cut whenever it reaches BUFFER_BATCHES batches' weight, so
    what is held never grows with the bundle, and still every element lands in exactly one batch within budget."""
    rng = random.Random(11)
    sizes = [rng.randint(1, 9) for _ in range(5000)]  # ~25,000 in weight: ~39 buffers of 64 x 10
    fn = _SortAndBatchFn(lambda s: s, max_batch_size=8, max_batch_weight=10)
    fn.start_bundle()
    held, batches = [], []
    for size in sizes:
        batches.extend(fn.process(size))
        held.append(fn._weight)
    batches.extend(windowed.value for windowed in fn.finish_bundle())
    assert max(held) < BUFFER_BATCHES * 10  # cut as soon as it reaches the bound
    assert sorted(s for b in batches for s in b) == sorted(sizes)
    assert all(b == sorted(b) and len(b) <= 8 and sum(b) <= 10 for b in batches)
    whole = cut_sorted_batches(sizes, lambda s: s, 8, 10)  # the whole bundle sorted at once, as Beam's would
    assert len(batches) <= 1.02 * len(whole)  # about as well filled
    # the pipeline form gives the same multiset of batches
    assert sorted(_batch(sizes, max_batch_size=8, max_batch_weight=10)) == sorted(batches)


def test_bad_budgets_are_rejected():
    with pytest.raises(ValueError, match="max_batch_weight >= 1"):
        SortAndBatchBounded(max_batch_size=4, max_batch_weight=0, element_size_fn=len)
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
