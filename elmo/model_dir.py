"""The file names of a model directory (local, ``gs://`` or ``s3://``): one home for them.

``options.json`` + ``weights.hdf5`` are the biLM (bilm-tf / AllenNLP layout); ``tokenizer.json`` holds the
``elmo.tokenize`` settings the pipeline splits text with (a model directory for the pipeline has all three).
"""

from __future__ import annotations

from pathlib import Path

OPTIONS_FILE = "options.json"
WEIGHTS_FILE = "weights.hdf5"
TOKENIZER_FILE = "tokenizer.json"
MODEL_FILES = (OPTIONS_FILE, WEIGHTS_FILE)  # what Elmo.from_directory and the inference stage load
PIPELINE_MODEL_FILES = (*MODEL_FILES, TOKENIZER_FILE)  # what a --model directory of the pipeline must hold

DEFAULT_MODEL_NAME = "elmo-en-small"
# the models installed with the package (setup.py's package_data): found from here in a checkout, an editable
# install and a wheel alike
PACKAGED_MODELS = Path(__file__).resolve().parent / "models"


def default_model_dir() -> Path:
    """The directory of the default model (``elmo-en-small``), installed inside the ``elmo`` package.

    The one resolver of the default: the pipeline's ``--model`` default and the tools use it, so the model is
    found wherever the package is installed, not only in a source checkout."""
    return PACKAGED_MODELS / DEFAULT_MODEL_NAME
