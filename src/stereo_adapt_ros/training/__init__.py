"""Training: supervised pretraining on the synthetic world and L2A meta-training (single device
or torchrun DDP)."""

from .losses import multiscale_l1
from .meta import MetaConfig, meta_train
from .supervised import TrainConfig, train

__all__ = ["MetaConfig", "TrainConfig", "meta_train", "multiscale_l1", "train"]
