"""ELMo biLM (Peters et al. 2018): model, official weights format, inference API. No Beam imports.

The public names load lazily (PEP 562), so that ``import elmo.tokenize`` (the tokenizer, which Beam workers and
the search tools use without a model) does not import torch: ``from elmo import Elmo`` imports ``elmo.api`` (and
torch) on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from elmo.malloc import pause_collector_while_command_imports

if TYPE_CHECKING:
    from elmo.api import Elmo
    from elmo.config import ElmoConfig, published_config
    from elmo.mix import LayerChoice, ScalarMix

pause_collector_while_command_imports()  # `python -m elmo.embed` etc. only (elmo.malloc)

# public name -> the module that defines it
_EXPORTS = {
    "Elmo": "elmo.api",
    "ElmoConfig": "elmo.config",
    "LayerChoice": "elmo.mix",
    "ScalarMix": "elmo.mix",
    "published_config": "elmo.config",
}

__all__ = ["Elmo", "ElmoConfig", "LayerChoice", "ScalarMix", "published_config"]


def __getattr__(name: str) -> Any:
    """Imports the module of a public name on first access and keeps the name in the package namespace."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
