"""What a stored vector is, shared by the pipeline (which writes them) and search (which embeds queries to match).

No Beam imports here.
"""

from __future__ import annotations

import numpy as np

STORED_DTYPES = {"float32": np.float32, "float16": np.float16}  # --dtype: the type vectors are stored as


def sentence_vector(token_vectors: np.ndarray) -> np.ndarray:
    """The sentence vector: mean over tokens of the layer mix; for layers=all, of the average of the layers.

    token_vectors (T, W) or (L+1, T, W) float32 -> (W,) float32.
    """
    mixed = token_vectors.mean(axis=0) if token_vectors.ndim == 3 else token_vectors  # (T, W)
    return mixed.mean(axis=0)
