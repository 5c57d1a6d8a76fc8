"""The MADNet network, its MAD blocks, and its weights files."""

from .madnet import BLOCKS, MADNet, MADNetOutput
from .weights import (InputNormalization, WeightsError, WeightsInfo, load_model, read_weights,
                      save_weights)

__all__ = ["BLOCKS", "MADNet", "MADNetOutput", "InputNormalization", "WeightsError", "WeightsInfo",
           "load_model", "read_weights", "save_weights"]
