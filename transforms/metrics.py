"""The Beam counters of the pipeline, in one namespace (they name the metrics on the runner's monitoring page)."""

from apache_beam.metrics import Metrics

NAMESPACE = "elmo_pipeline"


def counter(name: str):
    """A counter of the pipeline's namespace (declare in a DoFn's ``__init__``, increment in ``process``)."""
    return Metrics.counter(NAMESPACE, name)


def distribution(name: str):
    """A distribution (min/max/mean/count) of the pipeline's namespace."""
    return Metrics.distribution(NAMESPACE, name)
