"""Online self-supervised adaptation: losses, MAD block sampling, and the adapter."""

from .adapter import OnlineAdapter, StepResult
from .config import AdapterConfig
from .losses import photometric_error, photometric_loss, proxy_loss, ssim_dissimilarity
from .proxy import ProxyConfig, ProxyLabels, compute_proxy
from .sampler import BlockSampler, SamplerConfig

__all__ = ["AdapterConfig", "OnlineAdapter", "StepResult", "photometric_error",
           "photometric_loss", "proxy_loss", "ssim_dissimilarity", "ProxyConfig", "ProxyLabels",
           "compute_proxy", "BlockSampler", "SamplerConfig"]
