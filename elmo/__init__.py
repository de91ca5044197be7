"""ELMo biLM (Peters et al. 2018): model, official weights format, inference API. No Beam imports."""

from elmo.api import Elmo
from elmo.config import ElmoConfig, published_config
from elmo.mix import LayerChoice, ScalarMix

__all__ = ["Elmo", "ElmoConfig", "LayerChoice", "ScalarMix", "published_config"]
