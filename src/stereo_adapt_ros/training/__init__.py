"""Training: supervised pretraining on the synthetic world (single device or torchrun DDP)."""

from .supervised import TrainConfig, multiscale_l1, train

__all__ = ["TrainConfig", "multiscale_l1", "train"]
