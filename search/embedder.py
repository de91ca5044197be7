"""Embedding a query exactly as the pipeline embedded the corpus: the index's model (checked by fingerprint), its
tokenizer settings, initial state, windows, layer choice and stored dtype."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from elmo import Elmo
from elmo import vectors as stored
from elmo.tokenize import Tokenizer
from elmo.windows import merge_windows, plan_windows
from search.errors import EmptyQueryError, IndexModelError, SearchError


@dataclass(frozen=True)
class EmbeddedSentence:
    """One sentence of a query: its tokens and each token's vector (T, W) in the index's representation."""

    tokens: list[str]
    vectors: np.ndarray

    def sentence_vector(self, dtype: str) -> np.ndarray:
        """The pipeline's sentence vector: the mean of the token vectors, rounded to the stored dtype."""
        return stored.sentence_vector(self.vectors).astype(stored.STORED_DTYPES[dtype]).astype(np.float32)


class QueryEmbedder:
    """The model and settings an index records, ready to embed query text."""

    def __init__(self, model_state: dict[str, Any], model_dir: str | None = None, model: Elmo | None = None):
        settings = model_state["vector_settings"]
        self.settings = settings
        if model is None:
            model_dir = model_dir or model_state.get("dir")
            if not model_dir or ("://" not in model_dir and not os.path.isdir(model_dir)):
                raise SearchError(
                    f"the index's model directory {model_dir!r} is not reachable from here: pass --model DIR "
                    f"(the model with fingerprint {settings['fingerprint']})"
                )
            model = Elmo.from_directory(model_dir, initial_state=settings.get("initial_state", "warm"))
        if model.fingerprint != settings["fingerprint"]:
            raise IndexModelError(
                f"the query model {model_dir or ''} has fingerprint {model.fingerprint}; the index holds vectors "
                f"of model {settings['fingerprint']}: query with that model (vectors of different models are "
                "not comparable)"
            )
        if model.initial_state_name != settings.get("initial_state", model.initial_state_name):
            raise IndexModelError(
                f"the query model starts from the {model.initial_state_name!r} state; the index was embedded "
                f"from {settings['initial_state']!r}"
            )
        self.model = model
        self.tokenizer = Tokenizer.from_json(json.dumps(settings["tokenizer"]))
        self.max_tokens, self.overlap = settings["windows"]
        self.layers = settings["layers"]
        self.dtype = settings["dtype"]

    def embed(self, text: str) -> list[EmbeddedSentence]:
        """``text`` split into sentences and tokens by the index's tokenizer, each embedded (long sentences in
        windows, merged like the pipeline). Raises ``EmptyQueryError`` when the text has no token."""
        if not isinstance(text, str):
            raise SearchError(f"a query must be a string, not {type(text).__name__}")
        sentences = self.tokenizer.sentences(text)
        if not sentences:
            raise EmptyQueryError(f"the query {text!r} is empty: it has no token")
        out = []
        for sentence in sentences:
            tokens = sentence.texts()
            spans = plan_windows(len(tokens), self.max_tokens, self.overlap)
            windows = self.model.embed([tokens[a:b] for a, b in spans], layers=self.layers)
            merged = merge_windows(windows, spans, len(tokens))  # (T, W) or (L+1, T, W)
            vectors = merged.mean(axis=0) if merged.ndim == 3 else merged  # layers=all: the average of the layers
            out.append(EmbeddedSentence(tokens, vectors.astype(np.float32)))
        return out

    def sentence_vector(self, text: str) -> np.ndarray:
        """The query's sentence vector (W,); for several sentences, the mean of their vectors."""
        sentences = self.embed(text)
        return np.mean([s.sentence_vector(self.dtype) for s in sentences], axis=0).astype(np.float32)

    def word_vector(self, word: str, text: str) -> tuple[np.ndarray, str]:
        """The contextual vector of the first token of ``text`` equal to ``word`` (ignoring case), rounded to the
        stored dtype, and that token. Raises ``UnknownWordError`` when ``text`` does not contain it."""
        from search.errors import UnknownWordError

        target = word.strip().lower()
        sentences = self.embed(text)
        for sentence in sentences:
            for i, token in enumerate(sentence.tokens):
                if token.lower() == target:
                    vector = sentence.vectors[i].astype(stored.STORED_DTYPES[self.dtype]).astype(np.float32)
                    return vector, token
        tokens = [t for s in sentences for t in s.tokens]
        raise UnknownWordError(f"{word!r} is not a token of the example sentence {text!r} (its tokens: {tokens})")

    def layer0(self, tokens: list[str]) -> np.ndarray:
        """Layer 0 (the context-free char-CNN vector) of each distinct token: (len(tokens), W)."""
        distinct = sorted(set(tokens))
        vectors = self.model.embed([[t] for t in distinct], layers="all")
        by_token = {t: v[0, 0] for t, v in zip(distinct, vectors, strict=True)}
        return np.stack([by_token[t] for t in tokens]).astype(np.float32)
