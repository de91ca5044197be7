"""The biLM configuration: the official ``options.json`` as dataclasses.

Every field of the published files is represented, plus bilm-tf's training-only fields, so that
``ElmoConfig.from_dict(d).to_dict() == d`` for any options file written by bilm-tf or by us.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# Character ids are UTF-8 bytes 0..255 plus five markers (see ``elmo.chars``), +1 for the zero pad row.
N_CHARACTERS_INFERENCE = 262
N_CHARACTERS_TRAINING = 261


@dataclass
class CharCNNConfig:
    """The context-independent token encoder: char embedding -> CNN -> highway -> projection."""

    embedding_dim: int = 16  # E: size of one character embedding
    filters: list[list[int]] = field(
        default_factory=lambda: [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]]
    )  # [width, count]
    n_highway: int = 2  # highway layers over the F-dim CNN output (their nonlinearity is always ReLU)
    activation: str = "relu"  # "relu" or "tanh", applied after max-pooling each filter's output
    n_characters: int = N_CHARACTERS_INFERENCE  # 262 at inference (incl. zero row), 261 while training
    max_characters_per_token: int = 50  # C: char ids per token, incl. begin/end-of-word markers

    @property
    def n_filters(self) -> int:
        """F: the total number of CNN filters (width of the CNN output)."""
        return sum(count for _, count in self.filters)


@dataclass
class LSTMConfig:
    """The two independent (forward, backward) stacks of LSTMs with projection."""

    dim: int = 4096  # D: memory cell size
    projection_dim: int = 512  # P: projected hidden state size and token representation size
    n_layers: int = 2  # L
    cell_clip: float | None = 3  # clamp of the memory cell; falsy = no clip
    proj_clip: float | None = 3  # clamp of the projected hidden state; falsy = no clip
    use_skip_connections: bool = True  # residual add around layers >= 1


@dataclass
class ElmoConfig:
    """A whole biLM: ``options.json`` with ``char_cnn`` and ``lstm`` blocks and optional training fields."""

    char_cnn: CharCNNConfig = field(default_factory=CharCNNConfig)
    lstm: LSTMConfig = field(default_factory=LSTMConfig)
    # bilm-tf training fields (absent from published files); kept verbatim, in file order.
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def output_dim(self) -> int:
        """Width of every output layer: forward and backward halves, 2P."""
        return 2 * self.lstm.projection_dim

    @property
    def n_output_layers(self) -> int:
        """L + 1: the token layer followed by each biLSTM layer."""
        return self.lstm.n_layers + 1

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> ElmoConfig:
        """Builds a config from a parsed ``options.json``, validating what the model needs."""
        try:
            cnn = options["char_cnn"]
            lstm = options["lstm"]
        except KeyError as missing:
            raise ValueError(f"options.json lacks the {missing} block") from None
        char_cnn = CharCNNConfig(
            embedding_dim=int(cnn["embedding"]["dim"]),
            filters=[[int(w), int(n)] for w, n in cnn["filters"]],
            n_highway=int(cnn.get("n_highway") or 0),
            activation=cnn.get("activation", "relu"),
            n_characters=int(cnn.get("n_characters", N_CHARACTERS_INFERENCE)),
            max_characters_per_token=int(cnn.get("max_characters_per_token", 50)),
        )
        if char_cnn.activation not in ("relu", "tanh"):
            raise ValueError(f"char_cnn.activation must be relu or tanh, not {char_cnn.activation!r}")
        if char_cnn.max_characters_per_token < 3:
            raise ValueError("char_cnn.max_characters_per_token must leave room for the word markers")
        if any(w > char_cnn.max_characters_per_token for w, _ in char_cnn.filters):
            raise ValueError("a char_cnn filter is wider than max_characters_per_token")
        lstm_config = LSTMConfig(
            dim=int(lstm["dim"]),
            projection_dim=int(lstm["projection_dim"]),
            n_layers=int(lstm["n_layers"]),
            cell_clip=lstm.get("cell_clip"),
            proj_clip=lstm.get("proj_clip"),
            use_skip_connections=bool(lstm.get("use_skip_connections", False)),
        )
        training = {k: v for k, v in options.items() if k not in ("char_cnn", "lstm")}
        return cls(char_cnn=char_cnn, lstm=lstm_config, training=training)

    def to_dict(self) -> dict[str, Any]:
        """The ``options.json`` form (published key names and nesting)."""
        cnn = asdict(self.char_cnn)
        char_cnn = {
            "activation": cnn["activation"],
            "filters": cnn["filters"],
            "n_highway": cnn["n_highway"],
            "embedding": {"dim": cnn["embedding_dim"]},
            "n_characters": cnn["n_characters"],
            "max_characters_per_token": cnn["max_characters_per_token"],
        }
        return {"lstm": asdict(self.lstm), "char_cnn": char_cnn, **self.training}

    @classmethod
    def from_json(cls, path_or_text: str) -> ElmoConfig:
        """Reads ``options.json`` from a local path (or from its text when it starts with ``{``)."""
        if path_or_text.lstrip().startswith("{"):
            return cls.from_dict(json.loads(path_or_text))
        with open(path_or_text, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_json(self) -> str:
        """Serialises to ``options.json`` text."""
        return json.dumps(self.to_dict(), indent=2)


# The four published configurations (allennlp.org/elmo); all share the 2048-filter char CNN.
PUBLISHED_FILTERS = [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]]


def published_config(name: str) -> ElmoConfig:
    """The config of a published model: ``small``, ``medium``, ``original`` or ``original_5.5B``."""
    shapes = {
        "small": (1024, 128, 1),
        "medium": (2048, 256, 1),
        "original": (4096, 512, 2),
        "original_5.5B": (4096, 512, 2),
    }
    if name not in shapes:
        raise ValueError(f"unknown published model {name!r}; choose one of {sorted(shapes)}")
    dim, proj, n_highway = shapes[name]
    return ElmoConfig(
        char_cnn=CharCNNConfig(embedding_dim=16, filters=[list(f) for f in PUBLISHED_FILTERS], n_highway=n_highway),
        lstm=LSTMConfig(dim=dim, projection_dim=proj, n_layers=2, cell_clip=3, proj_clip=3, use_skip_connections=True),
    )
