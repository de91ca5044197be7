"""An independent, deliberately plain numpy (float64) biLM used as the oracle in tests.

It reads the weights file itself by dataset name and follows the TensorFlow formulas literally (bilm-tf
``model.py``): one sentence at a time, one time step at a time, TF gate order i, j, f, o, forget bias +1,
conv2d -> max-pool -> activation, the TF highway form, clip c then clip h. It shares no code with ``elmo``:
even the char ids are rebuilt here.
"""

from __future__ import annotations

import json

import h5py
import numpy as np


def _char_ids(token: str) -> list[int]:
    if token == "<S>":
        raw = [258, 256, 259]
    elif token == "</S>":
        raw = [258, 257, 259]
    else:
        raw = [258, *token.encode("utf-8", "ignore")[:48], 259]
    raw += [260] * (50 - len(raw))
    return [r + 1 for r in raw]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class ReferenceBiLm:
    """The oracle: ``embed(tokens, state)`` -> ((L+1, T, 2P) float64, final state)."""

    def __init__(self, options_path: str, weights_path: str):
        with open(options_path) as f:
            self.options = json.load(f)
        with h5py.File(weights_path, "r") as f:
            self.w = {}
            f.visititems(
                lambda name, obj: (
                    self.w.__setitem__(name, np.asarray(obj[...], np.float64))
                    if isinstance(obj, h5py.Dataset)
                    else None
                )
            )
        lstm = self.options["lstm"]
        self.n_layers = lstm["n_layers"]
        self.dim = lstm["dim"]
        self.proj = lstm["projection_dim"]

    def token_vector(self, token: str) -> np.ndarray:
        """Char CNN + highway + projection of one token: (P,)."""
        cnn = self.options["char_cnn"]
        table = np.vstack([np.zeros((1, self.w["char_embed"].shape[1])), self.w["char_embed"]])
        x = table[_char_ids(token)]  # (50, E)
        pooled = []
        for i, (width, _count) in enumerate(cnn["filters"]):
            kernel = self.w[f"CNN/W_cnn_{i}"][0]  # (w, E, n)
            conv = np.stack([np.einsum("we,wen->n", x[p : p + width], kernel) for p in range(50 - width + 1)])
            conv = conv + self.w[f"CNN/b_cnn_{i}"]
            m = conv.max(axis=0)
            pooled.append(np.tanh(m) if cnn["activation"] == "tanh" else np.maximum(m, 0))
        h = np.concatenate(pooled)
        for k in range(cnn.get("n_highway") or 0):
            carry = _sigmoid(h @ self.w[f"CNN_high_{k}/W_carry"] + self.w[f"CNN_high_{k}/b_carry"])
            transform = np.maximum(h @ self.w[f"CNN_high_{k}/W_transform"] + self.w[f"CNN_high_{k}/b_transform"], 0)
            h = carry * transform + (1 - carry) * h
        if "CNN_proj/W_proj" in self.w:
            h = h @ self.w["CNN_proj/W_proj"] + self.w["CNN_proj/b_proj"]
        return h

    def zero_state(self) -> dict:
        """h (P,) and c (D,) per (direction, layer), all zeros."""
        return {
            (d, layer): (np.zeros(self.proj), np.zeros(self.dim)) for d in range(2) for layer in range(self.n_layers)
        }

    def _run_lstm(self, d: int, layer: int, xs: list[np.ndarray], h: np.ndarray, c: np.ndarray):
        lstm = self.options["lstm"]
        prefix = f"RNN_{d}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"
        kernel, bias, proj = self.w[f"{prefix}/W_0"], self.w[f"{prefix}/B"], self.w[f"{prefix}/W_P_0"]
        n = self.dim
        outs = []
        for x in xs:
            z = np.concatenate([x, h]) @ kernel + bias
            i, j, f, o = z[:n], z[n : 2 * n], z[2 * n : 3 * n], z[3 * n :]
            c = _sigmoid(f + 1.0) * c + _sigmoid(i) * np.tanh(j)
            if lstm.get("cell_clip"):
                c = np.clip(c, -lstm["cell_clip"], lstm["cell_clip"])
            h = (_sigmoid(o) * np.tanh(c)) @ proj
            if lstm.get("proj_clip"):
                h = np.clip(h, -lstm["proj_clip"], lstm["proj_clip"])
            outs.append(h)
        return outs, h, c

    def embed(self, tokens: list[str], state: dict | None = None) -> tuple[np.ndarray, dict]:
        """One sentence -> ((L+1, T, 2P), final state), starting from ``state`` (zeros if None)."""
        state = dict(state or self.zero_state())
        reps = [self.token_vector(t) for t in ["<S>", *tokens, "</S>"]]
        skip = self.options["lstm"].get("use_skip_connections")
        per_dir = []
        for d in range(2):
            inputs = reps if d == 0 else reps[::-1]
            layers = []
            for layer in range(self.n_layers):
                h, c = state[(d, layer)]
                outs, h, c = self._run_lstm(d, layer, inputs, h, c)
                state[(d, layer)] = (h, c)
                if layer > 0 and skip:
                    outs = [o + x for o, x in zip(outs, inputs, strict=True)]
                layers.append(outs if d == 0 else outs[::-1])
                inputs = outs
            per_dir.append(layers)
        out = [np.concatenate([reps, reps], axis=-1)]
        for layer in range(self.n_layers):
            out.append(np.concatenate([np.stack(per_dir[0][layer]), np.stack(per_dir[1][layer])], axis=-1))
        stacked = np.stack(out)[:, 1:-1]
        return stacked, state
