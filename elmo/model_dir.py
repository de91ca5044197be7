"""The file names of a model directory (local, ``gs://`` or ``s3://``): one home for them.

``options.json`` + ``weights.hdf5`` are the biLM (bilm-tf / AllenNLP layout); ``tokenizer.json`` holds the
``elmo.tokenize`` settings the pipeline splits text with (a model directory for the pipeline has all three).
"""

from __future__ import annotations

OPTIONS_FILE = "options.json"
WEIGHTS_FILE = "weights.hdf5"
TOKENIZER_FILE = "tokenizer.json"
MODEL_FILES = (OPTIONS_FILE, WEIGHTS_FILE)  # what Elmo.from_directory and the inference stage load
PIPELINE_MODEL_FILES = (*MODEL_FILES, TOKENIZER_FILE)  # what a --model directory of the pipeline must hold
