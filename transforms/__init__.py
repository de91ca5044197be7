"""Beam stages of the embedding pipeline, each a named composite ``PTransform`` (they import ``elmo``, never
``pipeline``)."""

# Every process that runs a stage imports this package (Beam workers have no entry point of ours): the storage
# clients' retry defaults are set here, and the fixes of transforms.files (GCS emulator without ADC lookup, Beam's
# empty-file S3 upload) apply there too.
from elmo.retries import configure_client_retries
from transforms import files as _files  # noqa: F401

configure_client_retries()
