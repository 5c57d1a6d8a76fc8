"""The online adapter: predict disparity for a rectified pair and, in the same step, fine-tune
MADNet on that pair with a self-supervised loss: photometric, confidence-guided regression to
a traditional matcher's proxy labels, or both.

Every entry point (evaluation, benchmark, the ROS node, training scripts) uses this class, so
there is one implementation of a full step and of a MAD step.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..network.confidence_net import ConfidenceNetwork
from ..network.madnet import BLOCKS, MADNet
from ..network.weights import WeightsInfo, load_model, save_weights
from .confidence import photometric_confidence
from .inputs import pair_to_tensors
from .losses import edge_aware_smoothness, photometric_error, photometric_loss, proxy_loss
from .proxy import ProxyConfig, ProxyLabels, compute_proxy
from .sampler import SAMPLING_STRATEGIES, BlockSampler, SamplerConfig

LOG = logging.getLogger(__name__)

MODES = ("none", "full", "mad")
OPTIMIZERS = ("adam", "sgd")
AMP_MODES = ("auto", "off", "fp16", "bf16")
LOSSES = ("photometric", "proxy", "both")


def select_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available, else CPU; otherwise a torch device string, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


# With bf16 autocast on CPU, a MAD step trains these blocks in float32: oneDNN's bf16
# backward is slower than float32 on their small maps; block 3 is a draw and block 2 is
# faster in bf16 (docs/performance.md).
CPU_BF16_FLOAT32_BLOCKS = (4, 5, 6)


def native_cpu_bf16() -> bool:
    """The CPU computes in bf16 natively (AVX512-BF16 or AMX), so bf16 autocast pays off;
    without it oneDNN emulates bf16 and is slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for an ``AdapterConfig.amp`` setting on ``device`` (None: off)."""
    if device.type != "cuda":
        if amp == "fp16":
            raise ValueError("amp fp16 needs a CUDA device (use bf16 on CPU)")
        if amp == "auto":
            return torch.bfloat16 if native_cpu_bf16() else None
        return torch.bfloat16 if amp == "bf16" else None
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


@dataclass(frozen=True)
class AdapterConfig:
    """How the adapter adapts. Validated by ``validate()``, which has no side effects.

    mode: ``none`` (inference only), ``full`` (one step on the whole network, loss on the final
        output) or ``mad`` (one sampled block, loss on that block's own prediction).
    learning_rate, optimizer (``adam`` | ``sgd``, the latter with ``momentum``): as the original.
    mad_sampling, mad_fixed_block: block choice (see ``BlockSampler``).
    mad_loss_scale: in MAD steps on blocks 3-6, the photometric loss of the block's prediction
        is computed on images resized by this factor (1: full resolution, as the original;
        0.25: the network's output resolution, which makes those steps cheaper; block 2 and
        full steps always use full resolution). Photometric loss only.
    adapt_every_n: adapt on one frame in n (others are inference only).
    reset_loss_threshold: if the loss of a frame exceeds it, the weights go back to the initial
        ones (the original's safety valve, 0.5 on this loss's scale); None disables it.
    smoothness_weight: weight of the edge-aware smoothness term (0: the original's loss).
    input_scale: the network runs on images resized by this factor; outputs are returned at
        the input resolution with disparity rescaled to its pixels.
    loss: ``photometric`` (SSIM + L1 reconstruction), ``proxy`` (confidence-guided regression
        to a traditional matcher's disparity, ``proxy_loss``) or ``both`` (photometric +
        ``proxy_weight`` x proxy). In MAD mode the sampled block's own prediction takes the
        loss (MAD++ when the proxy is used). The proxy (``proxy_method`` sgbm | ad | census,
        ``proxy_confidence`` lr | peak | combined, ``proxy_max_disparity`` in input pixels,
        ``proxy_sgbm_mode`` OpenCV's SGBM variant;
        see ``proxy.py``) runs on CPU in a thread while the network predicts; pixels with
        confidence above ``proxy_tau`` are regressed.
    Fast path (each switchable, measured by ``stereo-adapt bench --compare``):
    amp: mixed precision. ``auto``: on CUDA bf16 where supported, else fp16 with loss scaling;
        on CPU bf16 where the CPU has it natively (AVX512-BF16 or AMX: 1.7x faster, and the
        shipped weights score the same D1 on the Motorcycle pan, docs/performance.md), else
        off (float32). ``fp16`` needs CUDA. The disparity-predicting layers and the losses
        always run in float32.
    channels_last: NHWC memory layout for the convolutions (faster with oneDNN and cuDNN;
        bit-for-bit different only by float32 rounding).
    cudnn_benchmark: let cuDNN pick the fastest kernels for the (fixed) input size.
    compile: ``torch.compile`` the inference forward (frames that do not adapt) and, for every
        step, the photometric error (fused warp, SSIM and L1, with its backward). Pays off on
        CUDA; on CPU it saves about 10 % of inference and more of a MAD step, after a minute
        of compilation.
    """

    mode: str = "mad"
    learning_rate: float = 1e-4
    optimizer: str = "adam"
    momentum: float = 0.9
    mad_sampling: str = "probabilistic"
    mad_fixed_block: int = 2
    mad_loss_scale: float = 1.0
    adapt_every_n: int = 1
    reset_loss_threshold: float | None = None
    smoothness_weight: float = 0.0
    input_scale: float = 1.0
    loss: str = "photometric"
    proxy_method: str = "sgbm"
    proxy_confidence: str = "combined"
    proxy_tau: float = 0.8
    proxy_weight: float = 0.1
    proxy_max_disparity: int = 128
    proxy_sgbm_mode: str = "sgbm"
    amp: str = "auto"
    channels_last: bool = True
    cudnn_benchmark: bool = True
    compile: bool = False
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError with the reason if any field is out of range."""
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if not (math.isfinite(self.learning_rate) and 0 < self.learning_rate <= 1):
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if not (0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.adapt_every_n < 1:
            raise ValueError(f"adapt_every_n must be >= 1, got {self.adapt_every_n}")
        if self.reset_loss_threshold is not None and not self.reset_loss_threshold > 0:
            raise ValueError("reset_loss_threshold must be > 0 (or None to disable)")
        if not (0 <= self.smoothness_weight < math.inf):
            raise ValueError(f"smoothness_weight must be >= 0, got {self.smoothness_weight}")
        if not (0.05 <= self.input_scale <= 4):
            raise ValueError(f"input_scale must be in [0.05, 4], got {self.input_scale}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not (0.1 <= self.mad_loss_scale <= 1):
            raise ValueError(f"mad_loss_scale must be in [0.1, 1], got {self.mad_loss_scale}")
        if self.mad_loss_scale != 1 and self.loss != "photometric":
            raise ValueError("mad_loss_scale below 1 needs loss=photometric (proxy labels "
                             f"are full resolution), got loss={self.loss!r}")
        if not 0 <= self.proxy_tau < 1:
            raise ValueError(f"proxy_tau must be in [0, 1), got {self.proxy_tau}")
        if not (0 < self.proxy_weight < math.inf):
            raise ValueError(f"proxy_weight must be > 0, got {self.proxy_weight}")
        self.proxy_config().validate()
        self.sampler_config().validate(BLOCKS)

    def proxy_config(self) -> ProxyConfig:
        return ProxyConfig(method=self.proxy_method, confidence=self.proxy_confidence,
                           max_disparity=self.proxy_max_disparity,
                           sgbm_mode=self.proxy_sgbm_mode)

    def sampler_config(self) -> SamplerConfig:
        return SamplerConfig(strategy=self.mad_sampling, fixed_block=self.mad_fixed_block)


@dataclass
class StepResult:
    """The outcome of one ``OnlineAdapter.step``.

    disparity: H x W float32, >= 0, in pixels of the input image.
    confidence: H x W float32 in [0, 1]: ``photometric_confidence``, or with L2A weights the
        learned confidence network's output (0 where the disparity points out of view).
    loss: the adaptation loss (``AdapterConfig.loss``) of the prediction returned, before this
        step's update; the photometric loss on frames that do not adapt.
    block: the MAD block trained (None unless a MAD step ran).
    adapted: whether the weights were updated.
    reset: whether the loss threshold sent the weights back to the initial ones.
    skipped: why an adaptation step was skipped (non-finite loss, gradient or weights), or None.
    proxy_density: fraction of the pixels the proxy regression used (None without proxy).
    timings: milliseconds of ``prepare``, ``forward``, ``backward`` (with the optimiser step)
        and ``total``; with a proxy also ``proxy`` (its own run time, in parallel with the
        network) and ``proxy_wait`` (how long the step waited for it: its cost in latency).
    """

    disparity: np.ndarray
    confidence: np.ndarray
    loss: float
    block: int | None
    adapted: bool
    reset: bool = False
    skipped: str | None = None
    proxy_density: float | None = None
    timings: dict[str, float] = field(default_factory=dict)


class OnlineAdapter:
    """Owns a MADNet, its optimiser and MAD's block sampler; ``step()`` per stereo pair.

    Not thread-safe: one thread (e.g. the node's worker) calls it.
    """

    def __init__(self, model: MADNet, info: WeightsInfo, config: AdapterConfig = AdapterConfig(),
                 device: str | torch.device = "cpu",
                 extra_tensors: dict[str, torch.Tensor] | None = None):
        config.validate()
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.info = info
        self.extra_tensors = dict(extra_tensors or {})
        self.config = config
        self.frames = 0
        self.paused = False
        self._initial_state = copy.deepcopy({k: v.detach().cpu() for k, v in
                                             model.state_dict().items()})
        self._params = dict(self.model.named_parameters())
        self._block_names = self.model.block_parameter_names()
        self._sampler = BlockSampler(BLOCKS, config.sampler_config(), seed=config.seed)
        self._optimizer = self._make_optimizer()
        self._proxy_pool: ThreadPoolExecutor | None = None
        self._confidence_net = self._load_confidence_network()
        self._apply_fast_path(_amp_dtype(config.amp, self.device))

    def _load_confidence_network(self) -> ConfidenceNetwork | None:
        """L2A's confidence network if the weights carry one (frozen: online it only weights
        the loss and gives the published confidence)."""
        network = ConfidenceNetwork.from_tensors(self.extra_tensors)
        if network is not None:
            network.to(self.device).eval().requires_grad_(False)
        return network

    def _confidence(self, error: torch.Tensor, disparity: torch.Tensor) -> torch.Tensor:
        confidence = photometric_confidence(error, disparity)
        if self._confidence_net is None:
            return confidence
        with torch.no_grad():
            return self._confidence_net(error.float()) * (confidence > 0)

    @classmethod
    def from_weights(cls, weights: str, config: AdapterConfig = AdapterConfig(),
                     device: str | torch.device = "cpu") -> "OnlineAdapter":
        """Load weights (a shipped name, a path, or ``random``) and wrap them."""
        model, info, extra = load_model(weights, device)
        return cls(model, info, config, device, extra)

    # --- configuration ----------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = self.model.parameters()
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.config.learning_rate,
                                   momentum=self.config.momentum)
        return torch.optim.Adam(params, lr=self.config.learning_rate)

    def _apply_fast_path(self, amp_dtype: torch.dtype | None) -> None:
        config = self.config
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model.to(memory_format=memory_format)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = config.cudnn_benchmark
        # Compiled for inference only: in adaptation steps the set of parameters requiring
        # gradients changes with the MAD block, which would force recompilations.
        self._inference_forward = torch.compile(self.model) if config.compile else self.model
        # The photometric error (warp, SSIM, L1: dozens of elementwise passes over full-size
        # images) is compiled for every step, so a MAD step's loss and its backward are fused.
        self._error_fn = torch.compile(photometric_error, dynamic=False) if config.compile \
            else photometric_error
        self._amp_dtype = amp_dtype
        self._scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    def reconfigure(self, config: AdapterConfig) -> None:
        """Apply a new configuration between frames, keeping the adapted weights (and the
        optimiser's state unless the optimiser kind changed)."""
        config.validate()
        amp_dtype = _amp_dtype(config.amp, self.device)
        old, self.config = self.config, config
        if config.optimizer != old.optimizer or config.momentum != old.momentum:
            self._optimizer = self._make_optimizer()
        elif config.learning_rate != old.learning_rate:
            for group in self._optimizer.param_groups:
                group["lr"] = config.learning_rate
        if config.sampler_config() != old.sampler_config():
            self._sampler = BlockSampler(BLOCKS, config.sampler_config(), seed=config.seed)
        fast_path = ("amp", "channels_last", "cudnn_benchmark", "compile")
        if any(getattr(config, f) != getattr(old, f) for f in fast_path):
            self._apply_fast_path(amp_dtype)

    def reset(self) -> None:
        """Back to the initial weights, with a fresh optimiser and sampler."""
        self.model.load_state_dict(self._initial_state)
        self._optimizer = self._make_optimizer()
        self._sampler.reset()

    def set_initial_weights(self, model_state: dict[str, torch.Tensor], info: WeightsInfo,
                            extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
        """Replace the weights and what ``reset()`` returns to (e.g. a new weights file)."""
        self._initial_state = {k: v.detach().cpu().clone() for k, v in model_state.items()}
        self.info = info
        self.extra_tensors = dict(extra_tensors or {})
        self._confidence_net = self._load_confidence_network()
        self.reset()

    def save(self, path: str, dtype: torch.dtype | None = None) -> None:
        """Write the current (adapted) weights atomically, with their metadata."""
        info = replace(self.info, description=(self.info.description + " | adapted online for "
                                               f"{self.frames} frames").strip(" |"))
        tensors = {**self.extra_tensors, **self.model.state_dict()}
        save_weights(path, tensors, info, dtype=dtype)

    @property
    def block_probabilities(self) -> dict[int, float]:
        return dict(zip(BLOCKS, self._sampler.probabilities().tolist()))

    # --- the step ---------------------------------------------------------------------
    def step(self, left: np.ndarray, right: np.ndarray) -> StepResult:
        """Predict the disparity of a rectified pair and adapt on it according to the mode.

        left, right: RGB or grayscale images, H x W (x 3), uint8, uint16 or float in [0, 1].
        Raises ValueError for a malformed pair (nothing is changed then).
        """
        start = time.perf_counter()
        left_t, right_t = pair_to_tensors(left, right, self.device)
        size = left_t.shape[-2:]
        if self.config.input_scale != 1.0:
            scaled = [max(8, round(s * self.config.input_scale)) for s in size]
            left_t = F.interpolate(left_t, size=scaled, mode="area" if
                                   self.config.input_scale < 1 else "bilinear")
            right_t = F.interpolate(right_t, size=scaled, mode="area" if
                                    self.config.input_scale < 1 else "bilinear")
        timings = {"prepare": (time.perf_counter() - start) * 1e3}

        adapt = (self.config.mode != "none" and not self.paused
                 and self.frames % self.config.adapt_every_n == 0)
        self.frames += 1
        if adapt:
            proxy = self._start_proxy(left, right) if self.config.loss != "photometric" \
                else None
            disparity, confidence, result = self._adapt(left_t, right_t, timings, proxy)
        else:
            disparity, confidence, result = self._infer(left_t, right_t, timings)
        if disparity.shape[-2:] != size:
            factor = size[1] / disparity.shape[-1]
            disparity = F.interpolate(disparity, size=size, mode="bilinear",
                                      align_corners=False) * factor
            confidence = F.interpolate(confidence, size=size, mode="bilinear",
                                       align_corners=False)
        result.disparity = disparity[0, 0].clamp_min(0).float().cpu().numpy()
        result.confidence = confidence[0, 0].clamp(0, 1).float().cpu().numpy()
        result.timings["total"] = (time.perf_counter() - start) * 1e3
        return result

    def _start_proxy(self, left: np.ndarray, right: np.ndarray) -> Future:
        """Compute the proxy labels in a worker thread (OpenCV and numpy release the GIL)."""
        if self._proxy_pool is None:
            self._proxy_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="proxy")
        config = self.config.proxy_config()

        def run() -> tuple[ProxyLabels, float]:
            start = time.perf_counter()
            labels = compute_proxy(left, right, config)
            return labels, (time.perf_counter() - start) * 1e3
        return self._proxy_pool.submit(run)

    def _proxy_tensors(self, future: Future, size: torch.Size, timings: dict[str, float]
                       ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Wait for the proxy; (disparity, confidence) as 1 x 1 x H x W at the network's input
        size (disparity rescaled to its pixels), and the fraction of pixels above tau."""
        start = time.perf_counter()
        labels, proxy_ms = future.result()
        timings["proxy_wait"] = (time.perf_counter() - start) * 1e3
        timings["proxy"] = proxy_ms
        density = labels.density(self.config.proxy_tau)
        disparity = torch.from_numpy(labels.disparity)[None, None].to(self.device)
        confidence = torch.from_numpy(labels.confidence)[None, None].to(self.device)
        if disparity.shape[-2:] != size:
            factor = size[1] / disparity.shape[-1]
            disparity = F.interpolate(disparity, size=size, mode="nearest") * factor
            confidence = F.interpolate(confidence, size=size, mode="nearest")
        return disparity, confidence, density

    def _adaptation_loss(self, left: torch.Tensor, right: torch.Tensor,
                         disparity: torch.Tensor, proxy: tuple | None
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(loss of ``AdapterConfig.loss`` for ``disparity``, photometric error map or None)."""
        kind, smoothness = self.config.loss, self.config.smoothness_weight
        if kind == "photometric":
            return self._photometric_loss(left, right, disparity, smoothness)
        regression = proxy_loss(disparity, proxy[0], proxy[1], self.config.proxy_tau)
        if kind == "proxy":
            if smoothness > 0:
                regression = regression + smoothness * edge_aware_smoothness(disparity.float(),
                                                                             left.float())
            return regression, None
        photometric, error = self._photometric_loss(left, right, disparity, smoothness)
        return photometric + self.config.proxy_weight * regression, error

    def _photometric_loss(self, left: torch.Tensor, right: torch.Tensor,
                          disparity: torch.Tensor, smoothness: float = 0.0
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """``photometric_loss`` weighted by the learned confidence (L2A weights), with the
        photometric error compiled when ``compile`` is on."""
        return photometric_loss(left, right, disparity, smoothness, self._confidence_net,
                                error_fn=self._error_fn)

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=self._amp_dtype,
                              enabled=self._amp_dtype is not None)

    def _network_input(self, left: torch.Tensor, right: torch.Tensor):
        memory_format = torch.channels_last if self.config.channels_last \
            else torch.contiguous_format
        normalize = self.info.normalization.apply
        return (normalize(left).contiguous(memory_format=memory_format),
                normalize(right).contiguous(memory_format=memory_format))

    def _infer(self, left: torch.Tensor, right: torch.Tensor, timings: dict[str, float]):
        t0 = time.perf_counter()
        self.model.eval()
        with torch.inference_mode(), self._autocast():
            output = self._inference_forward(*self._network_input(left, right))
            disparity = output.disparity.float()
            loss, error = self._photometric_loss(left, right, disparity)
            confidence = self._confidence(error, disparity)
            loss_value = float(loss)
        timings["forward"] = (time.perf_counter() - t0) * 1e3
        result = StepResult(disparity=np.empty(0), confidence=np.empty(0), loss=loss_value,
                            block=None, adapted=False, timings=timings)
        return disparity, confidence, result

    def _adapt(self, left: torch.Tensor, right: torch.Tensor, timings: dict[str, float],
               proxy_future: Future | None):
        mad = self.config.mode == "mad"
        block = self._sampler.choose() if mad else None
        trained = self._block_names[block] if mad else list(self._params)
        trained_params = [self._params[name] for name in trained]
        # Only the trained parameters require gradients, so autograd records nothing for the
        # rest of the network: a MAD step back-propagates through one block only.
        self.model.requires_grad_(False)
        for param in trained_params:
            param.requires_grad_(True)
        self.model.train()

        t0 = time.perf_counter()
        float32_block = block if mad and self._amp_dtype == torch.bfloat16 and \
            self.device.type == "cpu" and block in CPU_BF16_FLOAT32_BLOCKS else None
        with self._autocast():
            output = self.model(*self._network_input(left, right), detach_between_blocks=mad,
                                float32_block=float32_block)
        disparity = output.disparity.float()
        proxy, density = None, None
        if proxy_future is not None:
            try:
                *proxy, density = self._proxy_tensors(proxy_future, left.shape[-2:], timings)
            except (ValueError, cv2.error) as error:
                # No labels for this frame: predict without adapting, keep the weights.
                LOG.warning("proxy labels failed (%s); frame not adapted", error)
                self.model.requires_grad_(True)
                disparity = disparity.detach()
                with torch.no_grad():
                    loss, error_map = self._photometric_loss(left, right, disparity)
                timings["forward"] = (time.perf_counter() - t0) * 1e3
                return disparity, self._confidence(error_map, disparity), StepResult(
                    disparity=np.empty(0), confidence=np.empty(0), loss=float(loss),
                    block=None, adapted=False, skipped=f"proxy failed: {error}",
                    timings=timings)
        if mad and block != 2:
            block_loss, _ = self._adaptation_loss(*self._block_loss_inputs(output, block, left,
                                                                           right), proxy)
            with torch.no_grad():
                loss, error = self._adaptation_loss(left, right, disparity.detach(), proxy)
        else:
            block_loss, error = self._adaptation_loss(left, right, disparity, proxy)
            loss = block_loss
        if error is None:
            with torch.no_grad():
                _, error = self._photometric_loss(left, right, disparity.detach())
        error = error.detach()
        disparity = disparity.detach()
        timings["forward"] = (time.perf_counter() - t0) * 1e3

        t1 = time.perf_counter()
        loss_value, skipped = self._guarded_update(block_loss, loss, trained_params)
        result = StepResult(disparity=np.empty(0), confidence=np.empty(0), loss=loss_value,
                            block=block, adapted=skipped is None, skipped=skipped,
                            proxy_density=density, timings=timings)
        threshold = self.config.reset_loss_threshold
        if threshold is not None and loss_value > threshold:
            LOG.warning("loss %.3f above reset threshold %.3f: back to the initial weights",
                        loss_value, threshold)
            self.reset()
            result.reset, result.adapted = True, False
        elif skipped:
            LOG.warning("adaptation step skipped (%s); the last good weights are kept", skipped)
        if mad and not result.reset:
            self._sampler.update(loss_value, block)
        self.model.requires_grad_(True)
        timings["backward"] = (time.perf_counter() - t1) * 1e3
        return disparity, self._confidence(error, disparity), result

    def _block_loss_inputs(self, output, block: int, left: torch.Tensor, right: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(left, right, block disparity) at ``mad_loss_scale`` of the input resolution."""
        disparity = output.upsampled(block).float()
        scale = self.config.mad_loss_scale
        if scale == 1:
            return left, right, disparity
        height, width = left.shape[-2:]
        size = (max(8, round(height * scale)), max(8, round(width * scale)))
        left, right = (F.interpolate(image, size=size, mode="area") for image in (left, right))
        disparity = F.interpolate(disparity, size=size, mode="area") * (size[1] / width)
        return left, right, disparity

    def _guarded_update(self, loss: torch.Tensor, reported_loss: torch.Tensor,
                        params: list[torch.nn.Parameter]) -> tuple[float, str | None]:
        """Back-propagate ``loss`` and step ``params``; a non-finite loss, gradient or updated
        weight never stays in the model.

        The step is taken without waiting for the device; its health (finite loss, gradients
        and weights) is read back together with ``reported_loss`` in the one synchronisation
        of the step, and a bad step is rolled back then. Returns (reported loss, the reason
        the step was undone or None).
        """
        self._optimizer.zero_grad(set_to_none=True)
        backup = [p.detach().clone() for p in params]
        if self._scaler is not None:
            self._scaler.scale(loss).backward()
            self._scaler.unscale_(self._optimizer)
        else:
            loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        grads_finite = _all_finite(grads) if grads else torch.zeros((), dtype=torch.bool,
                                                                      device=self.device)
        if self._scaler is not None:
            # The scaler skips the step itself on overflow (and lowers its scale).
            self._scaler.step(self._optimizer)
            self._scaler.update()
        else:
            self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        health = torch.stack([reported_loss.detach().float(), torch.isfinite(loss.detach()),
                              grads_finite, _all_finite(params)]).tolist()
        reported, loss_ok, grads_ok, weights_ok = health
        if loss_ok and grads_ok and weights_ok:
            return reported, None
        with torch.no_grad():
            for param, saved in zip(params, backup):
                param.copy_(saved)
        # Adam's moments took the non-finite gradient in; a skipped fp16 step left them alone.
        if self._scaler is None or weights_ok == 0:
            for param in params:
                self._optimizer.state.pop(param, None)
        if not loss_ok:
            return reported, "non-finite loss"
        if not grads:
            return reported, "no gradient"
        return reported, "non-finite gradient" if not grads_ok else \
            "non-finite weights after the update"


def _all_finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """A 0-d bool tensor on the tensors' device: every element of every tensor is finite."""
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()
