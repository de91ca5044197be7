"""Beam stages of the embedding pipeline, each a named composite ``PTransform`` (they import ``elmo``, never
``pipeline``)."""

# Every process that runs a stage imports this package: the storage settings of transforms.files (client retry
# defaults, GCS emulator without ADC lookup, Beam's empty-file S3 upload fixed) then apply there too.
from transforms import files as _files  # noqa: F401
