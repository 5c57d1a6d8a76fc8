"""Online self-supervised adaptation: losses, MAD block sampling, and the adapter."""

from .adapter import OnlineAdapter, StepResult
from .config import MODES, OPTIMIZERS, AdapterConfig
from .confidence import photometric_confidence
from .precision import select_device
from .losses import photometric_error, photometric_loss, proxy_loss, ssim_dissimilarity
from .proxy import CONFIDENCE_MEASURES, PROXY_METHODS, ProxyConfig, ProxyLabels, compute_proxy
from .sampler import SAMPLING_STRATEGIES, BlockSampler, SamplerConfig

__all__ = ["MODES", "OPTIMIZERS", "AdapterConfig", "OnlineAdapter", "StepResult", "select_device",
           "photometric_confidence", "photometric_error", "photometric_loss", "proxy_loss",
           "CONFIDENCE_MEASURES", "PROXY_METHODS", "ProxyConfig", "ProxyLabels", "compute_proxy",
           "ssim_dissimilarity", "SAMPLING_STRATEGIES", "BlockSampler", "SamplerConfig"]
