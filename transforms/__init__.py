"""Beam stages of the embedding pipeline, each a named composite ``PTransform`` (they import ``elmo``, never
``pipeline``)."""
