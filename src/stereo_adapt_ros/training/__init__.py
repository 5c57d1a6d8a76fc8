"""Training: supervised pretraining on the synthetic world and L2A meta-training (single device
or torchrun DDP)."""

from .meta import MetaConfig, meta_train
from .supervised import TrainConfig, multiscale_l1, train

__all__ = ["MetaConfig", "TrainConfig", "meta_train", "multiscale_l1", "train"]
