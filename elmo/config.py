"""The biLM configuration: the official ``options.json`` as dataclasses.

Every field of the published files is represented, plus bilm-tf's training-only fields, so that
``ElmoConfig.from_dict(d).to_dict() == d`` for any options file written by bilm-tf or by us.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

from elmo.errors import ConfigError, ModelFilesError

# Character ids are UTF-8 bytes 0..255 plus five markers (see ``elmo.chars``), +1 for the zero pad row.
N_CHARACTERS_INFERENCE = 262
N_CHARACTERS_TRAINING = 261
# The char CNN of the four published configurations (allennlp.org/elmo): 2048 filters, [width, count].
# Inference default (here because this module imports no torch; elmo.token_cache): distinct tokens whose char-CNN
# vectors are kept per process, 4*P bytes each: 32 MiB for the built-in model (P = 128), 128 MiB at P = 512.
DEFAULT_TOKEN_CACHE_SIZE = 65536
PUBLISHED_FILTERS = ((1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024))


@dataclass
class CharCNNConfig:
    """The context-independent token encoder: char embedding -> CNN -> highway -> projection."""

    embedding_dim: int = 16  # E: size of one character embedding
    filters: list[list[int]] = field(default_factory=lambda: [list(f) for f in PUBLISHED_FILTERS])  # [width, count]
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


class OptionsError(ConfigError):
    """``options.json`` is not valid JSON, lacks a key, or holds a value the model cannot use (names file and key)."""


CHAR_CNN_KEYS = ("activation", "filters", "n_highway", "embedding", "n_characters", "max_characters_per_token")
LSTM_KEYS = ("dim", "projection_dim", "n_layers", "cell_clip", "proj_clip", "use_skip_connections")
_MISSING = object()


def _parse_json(text: str, source: str) -> Any:
    """Parses JSON text; invalid JSON (or NaN/Infinity literals) raises ``OptionsError`` with line and column."""

    def no_constant(name: str) -> NoReturn:
        raise OptionsError(f"{source}: {name} is not a valid JSON number")

    try:
        return json.loads(text, parse_constant=no_constant)
    except json.JSONDecodeError as err:
        raise OptionsError(f"{source}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None


class _OptionsReader:
    """Typed access to the blocks of a parsed ``options.json``; every failure names the file and the key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, problem: str) -> NoReturn:
        """Raises ``OptionsError``: ``<file>: <key> <problem>``."""
        raise OptionsError(f"{self.source}: {key} {problem}")

    def get(self, block: dict[str, Any], key: str, default: Any = _MISSING) -> Any:
        """The value of dotted ``key``'s last part in ``block``; a missing key without default is an error."""
        value = block.get(key.rsplit(".", 1)[-1], default)
        if value is _MISSING:
            self.fail(key, "is missing")
        return value

    def block(self, parent: Any, key: str, known: tuple[str, ...]) -> dict[str, Any]:
        """A nested object; unknown keys in it (typos) are refused."""
        if not isinstance(parent, dict):
            raise OptionsError(f"{self.source}: expected a JSON object, not {type(parent).__name__}")
        value = self.get(parent, key)
        if not isinstance(value, dict):
            self.fail(key, f"must be a JSON object, not {value!r}")
        unknown = sorted(set(value) - set(known))
        if unknown:
            self.fail(key, f"has unknown keys {unknown}; known keys: {list(known)}")
        return value

    def integer(self, block: dict[str, Any], key: str, minimum: int, default: Any = _MISSING) -> int:
        """An integer >= ``minimum`` (``null`` counts as the default when there is one)."""
        value = self.get(block, key, default)
        if value is None and default is not _MISSING:
            value = default
        return self._check_integer(key, value, minimum)

    def _check_integer(self, key: str, value: Any, minimum: int) -> int:
        integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not integral or value < minimum:
            what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            self.fail(key, f"must be {what}, not {value!r}")
        return int(value)

    def filters(self, cnn: dict[str, Any]) -> list[list[int]]:
        """``char_cnn.filters``: a non-empty list of ``[width, count]`` pairs of positive integers."""
        value = self.get(cnn, "char_cnn.filters")
        if not isinstance(value, list) or not value:
            self.fail("char_cnn.filters", f"must be a non-empty list of [width, count] pairs, not {value!r}")
        filters = []
        for i, pair in enumerate(value):
            if not isinstance(pair, list) or len(pair) != 2:
                self.fail(f"char_cnn.filters[{i}]", f"must be a [width, count] pair, not {pair!r}")
            width = self._check_integer(f"char_cnn.filters[{i}][0] (width)", pair[0], 1)
            filters.append([width, self._check_integer(f"char_cnn.filters[{i}][1] (count)", pair[1], 1)])
        return filters

    def choice(self, block: dict[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
        """One of ``allowed``."""
        value = self.get(block, key, default)
        if value not in allowed:
            self.fail(key, f"must be one of {list(allowed)}, not {value!r}")
        return value

    def clip(self, block: dict[str, Any], key: str) -> float | None:
        """A clip value: absent, ``null``, 0 (no clipping) or a positive finite number."""
        value = self.get(block, key, None)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            self.fail(key, f"must be null, 0 (no clipping) or a positive number, not {value!r}")
        return value

    def boolean(self, block: dict[str, Any], key: str, default: bool) -> bool:
        """``true`` or ``false``."""
        value = self.get(block, key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {value!r}")
        return value


@dataclass
class ElmoConfig:
    """A whole biLM: ``options.json`` with ``char_cnn`` and ``lstm`` blocks and optional training fields."""

    char_cnn: CharCNNConfig = field(default_factory=CharCNNConfig)
    lstm: LSTMConfig = field(default_factory=LSTMConfig)
    # bilm-tf training fields (absent from published files); kept verbatim, in file order.
    training: dict[str, Any] = field(default_factory=dict)
    # Whether the char CNN output is projected to P (the weights file's ``CNN_proj``). Not in options.json: the
    # weights file decides (``elmo.weights.load_weights`` sets it). None: bilm-tf's rule, present unless F == P.
    # AllenNLP writes ``CNN_proj`` even when F == P and always applies it, so such a file must keep it.
    char_projection: bool | None = None

    def __post_init__(self) -> None:
        if self.char_projection is False and self.char_cnn.n_filters != self.lstm.projection_dim:
            raise ConfigError(
                f"the char CNN has {self.char_cnn.n_filters} filters and lstm.projection_dim is "
                f"{self.lstm.projection_dim}: it needs the projection (CNN_proj), which only F == P may omit"
            )

    @property
    def has_char_projection(self) -> bool:
        """Whether the char CNN output (N, F) goes through the projection to (N, P) (``CNN_proj``)."""
        if self.char_projection is None:
            return self.char_cnn.n_filters != self.lstm.projection_dim
        return self.char_projection

    @property
    def output_dim(self) -> int:
        """Width of every output layer: forward and backward halves, 2P."""
        return 2 * self.lstm.projection_dim

    @property
    def n_output_layers(self) -> int:
        """L + 1: the token layer followed by each biLSTM layer."""
        return self.lstm.n_layers + 1

    @classmethod
    def from_dict(cls, options: Any, source: str = "options.json") -> ElmoConfig:
        """Builds a config from a parsed ``options.json``; raises ``OptionsError`` naming ``source`` and the key
        of any missing, unknown or unusable value (zero or negative sizes, an unknown activation, ...)."""
        read = _OptionsReader(source)
        cnn = read.block(options, "char_cnn", CHAR_CNN_KEYS)
        lstm = read.block(options, "lstm", LSTM_KEYS)
        embedding = read.block(cnn, "char_cnn.embedding", ("dim",))
        char_cnn = CharCNNConfig(
            embedding_dim=read.integer(embedding, "char_cnn.embedding.dim", minimum=1),
            filters=read.filters(cnn),
            n_highway=read.integer(cnn, "char_cnn.n_highway", minimum=0, default=0),
            activation=read.choice(cnn, "char_cnn.activation", ("relu", "tanh"), default="relu"),
            n_characters=read.integer(cnn, "char_cnn.n_characters", minimum=1, default=N_CHARACTERS_INFERENCE),
            max_characters_per_token=read.integer(cnn, "char_cnn.max_characters_per_token", minimum=3, default=50),
        )
        if char_cnn.n_characters not in (N_CHARACTERS_TRAINING, N_CHARACTERS_INFERENCE):
            read.fail(
                "char_cnn.n_characters",
                f"must be {N_CHARACTERS_INFERENCE} (or {N_CHARACTERS_TRAINING} "
                f"in training files), not {char_cnn.n_characters}",
            )
        widest = max(w for w, _ in char_cnn.filters)
        if widest > char_cnn.max_characters_per_token:
            read.fail(
                "char_cnn.filters",
                f"a filter of width {widest} is wider than max_characters_per_token "
                f"({char_cnn.max_characters_per_token})",
            )
        lstm_config = LSTMConfig(
            dim=read.integer(lstm, "lstm.dim", minimum=1),
            projection_dim=read.integer(lstm, "lstm.projection_dim", minimum=1),
            n_layers=read.integer(lstm, "lstm.n_layers", minimum=1),
            cell_clip=read.clip(lstm, "lstm.cell_clip"),
            proj_clip=read.clip(lstm, "lstm.proj_clip"),
            use_skip_connections=read.boolean(lstm, "lstm.use_skip_connections", default=False),
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
    def from_json(cls, path_or_text: str | os.PathLike) -> ElmoConfig:
        """Reads ``options.json`` from a local path (or from its text when it starts with ``{``).

        Raises ``OptionsError`` naming the file (and line/column for invalid JSON), ``ModelFilesError`` when the
        path does not exist."""
        text = os.fspath(path_or_text)
        if text.lstrip().startswith("{"):
            return cls.from_dict(_parse_json(text, "options.json"))
        if not os.path.exists(text):
            raise ModelFilesError(f"options file {text} does not exist")
        if os.path.isdir(text):
            raise ModelFilesError(f"options file {text} is a directory, not a file")
        with open(text, "rb") as f:
            raw = f.read()
        try:
            decoded = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise OptionsError(f"{text}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        return cls.from_dict(_parse_json(decoded, text), source=text)

    def to_json(self) -> str:
        """Serialises to ``options.json`` text."""
        return json.dumps(self.to_dict(), indent=2)


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
