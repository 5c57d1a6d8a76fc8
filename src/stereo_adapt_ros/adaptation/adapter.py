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
import random
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..network.confidence_net import ConfidenceNetwork
from ..network.madnet import BLOCKS, MADNet, MADNetOutput
from ..network.weights import WeightsInfo, load_model, save_weights
from .config import AdapterConfig
from .confidence import in_right_view, photometric_confidence
from .guard import CollapseGuard, prediction_statistics, proxy_disagreement
from .precision import autocast_dtype, measure_cpu_autocast, measure_float32_blocks, \
    native_cpu_bf16
from .inputs import pair_to_tensors
from .losses import edge_aware_smoothness, photometric_error, photometric_loss, proxy_loss, \
    unwarped_error
from .proxy import ProxyLabels, check_confidence_available, compute_proxy
from .safety import MIN_PROXY_DENSITY, ReferenceCheck, Verdict, anchor_penalty, frozen_copy, \
    photometric_score, proxy_score, restore_fraction
from .sampler import BlockSampler

LOG = logging.getLogger(__name__)


@dataclass
class StepResult:
    """The outcome of one ``OnlineAdapter.step``.

    disparity: H x W float32, >= 0, in pixels of the input image.
    confidence: H x W float32 in [0, 1]: ``photometric_confidence``, or with L2A weights the
        learned confidence network's output (0 where the disparity points out of view). When
        the step was called with ``want_confidence=False``, only the in-view mask (1 where
        x - d >= 0, else 0: where the full confidence is above 0), without the photometric
        error map behind the confidence.
    loss: the adaptation loss (``AdapterConfig.adaptation_loss``) of the prediction returned,
        before this step's update; the photometric loss on frames that do not adapt (NaN on
        those when the step was called with ``want_loss=False``).
    block: the MAD block trained (None unless a MAD step ran).
    adapted: whether the weights were updated.
    reset: whether the loss threshold or the collapse guard sent the weights back to the
        initial ones; collapse: the guard's reason when it did.
    skipped: why an adaptation step was skipped (non-finite loss, gradient or weights), or None.
    reference_won: on a frame the frozen-reference check judged (``reference_check_every``),
        whether the initial weights' prediction was published instead of the adapted one;
        None on other frames.
    proxy_density: fraction of the pixels the proxy regression used (None without proxy).
    timings: milliseconds of ``prepare`` (the images to tensors), ``forward`` (up to the
        backward pass), ``backward`` (with the optimiser step), ``output`` (back to input
        resolution and NumPy) and ``total``; within ``forward``, ``network`` (MADNet's forward
        pass) and ``confidence`` (the photometric error map and, on frames that do not adapt,
        the loss, which the published confidence needs); with a proxy also ``proxy`` (its own
        run time, in parallel with the network) and ``proxy_wait`` (how long the step waited
        for it: its cost in latency). On CUDA the parts are not synchronised, only ``total``.
    """

    disparity: np.ndarray
    confidence: np.ndarray
    loss: float
    block: int | None
    adapted: bool
    reset: bool = False
    collapse: str | None = None
    skipped: str | None = None
    reference_won: bool | None = None
    proxy_density: float | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Outcome:
    """A step's outcome before its conversion to ``StepResult``: disparity and confidence are
    still 1 x 1 x h x w tensors at the network's input size (disparity in its pixels)."""

    disparity: torch.Tensor
    confidence: torch.Tensor
    loss: float
    block: int | None = None
    adapted: bool = False
    reset: bool = False
    collapse: str | None = None
    skipped: str | None = None
    reference_won: bool | None = None
    proxy_density: float | None = None


@dataclass(frozen=True)
class _LossTerms:
    """What a step computes of its losses before the proxy labels arrive: the MAD block's
    prediction (the final one in full steps and on block 2) with the images its loss compares
    (``mad_loss_scale``) and the photometric part of its loss, which is back-propagated; the
    final prediction with its photometric part and error map, which are reported. Photometric
    parts and the error map are None for losses without them (proxy, the oracle)."""

    block_left: torch.Tensor
    block_disparity: torch.Tensor
    block_photometric: torch.Tensor | None
    left: torch.Tensor
    disparity: torch.Tensor
    photometric: torch.Tensor | None
    error: torch.Tensor | None


@dataclass(frozen=True)
class ProxyTargets:
    """The proxy labels as regression targets, 1 x 1 x h x w at the network's input size:
    ``disparity`` in its pixels (NaN: no label) and ``confidence`` in [0, 1]; ``density`` is the
    fraction of the pixels whose confidence is above ``proxy_tau``."""

    disparity: torch.Tensor
    confidence: torch.Tensor
    density: float


@dataclass
class _RecentPair:
    """A pair kept for replay steps, with its proxy labels once computed (a replay step
    reuses them instead of running the matcher again on the same pair)."""

    left: np.ndarray
    right: np.ndarray
    left_t: torch.Tensor
    right_t: torch.Tensor
    proxy: Future | None = None


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
        self.guard = CollapseGuard()
        self._disagreement: float | None = None
        self._recent: deque[_RecentPair] = deque(maxlen=config.replay_buffer)
        self._replay_random = random.Random(config.seed)
        self._apply_fast_path(autocast_dtype(config.amp, self.device))
        self.reference_check = ReferenceCheck(config.reference_margin, config.reference_patience,
                                              config.reference_check_every,
                                              _check_backoff(config))
        self._moved = False
        self._steps_since_reset = 0
        self._build_reference()
        if config.adaptation_loss != "photometric":
            # Refused here, with the reason, rather than failing every step's proxy.
            check_confidence_available(config.proxy_config())

    def _build_reference(self) -> None:
        """The frozen initial weights, for the reference check and the anchors (None when
        none of them is on)."""
        config = self.config
        self._reference: MADNet | None = None
        self._source: dict[str, torch.Tensor] = {}
        if _needs_reference(config):
            self._reference = frozen_copy(self.model)
            self._reference.load_state_dict(self._initial_state)
            self._source = dict(self._reference.named_parameters())

    def _load_confidence_network(self) -> ConfidenceNetwork | None:
        """L2A's confidence network if the weights carry one (frozen: online it only weights
        the loss and gives the published confidence)."""
        network = ConfidenceNetwork.from_tensors(self.extra_tensors)
        if network is not None:
            network.to(self.device).eval().requires_grad_(False)
        return network

    def _confidence(self, error: torch.Tensor | None, disparity: torch.Tensor) -> torch.Tensor:
        """The published confidence of ``disparity`` from its photometric ``error`` map; None:
        not wanted, the in-view mask only."""
        if error is None:
            return in_right_view(disparity).float()
        confidence = photometric_confidence(error, disparity)
        if self._confidence_net is None:
            return confidence
        with torch.no_grad():
            return self._confidence_net(error.float()) * (confidence > 0)

    @classmethod
    def from_weights(cls, weights: str, config: AdapterConfig = AdapterConfig(),
                     device: str | torch.device = "cpu") -> OnlineAdapter:
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
        self.model.to(memory_format=memory_format)  # type: ignore[call-overload]  # torch's stubs
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
        # CPU auto: bf16 only if a timed trial at the first frame's size says it is faster.
        self._amp_trial_pending = (self.config.amp == "auto" and self.device.type == "cpu"
                                   and native_cpu_bf16())
        # Under bf16 on a CPU, the blocks adaptation steps train in float32: (size, blocks)
        # settled by a timed trial at the first adaptation step (measure_float32_blocks).
        self._float32_blocks: tuple[tuple[int, int], tuple[int, ...]] | None = None
        self._scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    def reconfigure(self, config: AdapterConfig) -> None:
        """Apply a new configuration between frames, keeping the adapted weights (and the
        optimiser's state unless the optimiser kind changed)."""
        config.validate()
        amp_dtype = autocast_dtype(config.amp, self.device)
        old, self.config = self.config, config
        if config.optimizer != old.optimizer or config.momentum != old.momentum:
            self._optimizer = self._make_optimizer()
        if config.sampler_config() != old.sampler_config():
            self._sampler = BlockSampler(BLOCKS, config.sampler_config(), seed=config.seed)
        if config.replay_buffer != old.replay_buffer:
            self._recent = deque(self._recent, maxlen=config.replay_buffer)
        if (config.proxy_config(), config.proxy_scale) != (old.proxy_config(), old.proxy_scale):
            for pair in self._recent:
                pair.proxy = None
        self.reference_check.margin = config.reference_margin
        self.reference_check.patience = config.reference_patience
        if (config.reference_check_every, _check_backoff(config)) != (
                old.reference_check_every, _check_backoff(old)):
            self.reference_check.every = config.reference_check_every
            self.reference_check.backoff = _check_backoff(config)
            self.reference_check.restart()
        if (self._reference is not None) != _needs_reference(config):
            self._build_reference()
        fast_path = ("amp", "channels_last", "cudnn_benchmark", "compile")
        if any(getattr(config, f) != getattr(old, f) for f in fast_path):
            self._apply_fast_path(amp_dtype)

    def reset(self) -> None:
        """Back to the initial weights, with a fresh optimiser, sampler and collapse guard."""
        self.model.load_state_dict(self._initial_state)
        self._optimizer = self._make_optimizer()
        self._sampler.reset()
        self.guard.restart()
        self.reference_check.restart()
        self._moved = False
        self._steps_since_reset = 0

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The online optimiser (for checkpoints of offline adaptation)."""
        return self._optimizer

    def set_initial_weights(self, model_state: dict[str, torch.Tensor], info: WeightsInfo,
                            extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
        """Replace the weights and what ``reset()`` returns to (e.g. a new weights file)."""
        self._initial_state = {k: v.detach().cpu().clone() for k, v in model_state.items()}
        self.info = info
        self.extra_tensors = dict(extra_tensors or {})
        self._confidence_net = self._load_confidence_network()
        self.reset()
        self._build_reference()

    def save(self, path: str, dtype: torch.dtype | None = None) -> None:
        """Write the current (adapted) weights atomically, with their metadata."""
        info = replace(self.info, description=(self.info.description + " | adapted online for "
                                               f"{self.frames} frames").strip(" |"))
        tensors = {**self.extra_tensors, **self.model.state_dict()}
        save_weights(path, tensors, info, dtype=dtype)

    # --- the step ---------------------------------------------------------------------
    def step(self, left: np.ndarray, right: np.ndarray,
             ground_truth: np.ndarray | None = None, want_confidence: bool = True,
             want_loss: bool = True) -> StepResult:
        """Predict the disparity of a rectified pair and adapt on it according to the mode.

        left, right: RGB or grayscale images, H x W (x 3), uint8, uint16 or float in [0, 1].
        ground_truth: only for evaluation's oracle (``eval --oracle``): the step then regresses
        this disparity (H x W, pixels, NaN unknown) with an L1 loss instead of its
        self-supervised one, the ceiling a perfect adaptation signal would reach.
        want_confidence: False when nobody reads the confidence (e.g. no subscriber): the
            step then skips the photometric error map behind it, and the result's
            ``confidence`` is the in-view mask (see ``StepResult``).
        want_loss: False when nobody reads the loss of frames that do not adapt (e.g. no
            subscriber to the node's frame diagnostics): such a frame then skips the loss (and
            its auto-masking reference error) and reports NaN. Adaptation steps always compute
            their loss. With both False, a frame that does not adapt runs the network only;
            the disparity is the same either way.
        Raises ValueError for a malformed pair (nothing is changed then).
        """
        start = time.perf_counter()
        left_t, right_t = pair_to_tensors(left, right, self.device)
        size = left_t.shape[-2:]
        target = None
        if ground_truth is not None:
            if ground_truth.shape != tuple(size):
                raise ValueError(f"ground truth {ground_truth.shape} does not match the "
                                 f"images {tuple(size)}")
            target = torch.from_numpy(np.nan_to_num(ground_truth.astype(np.float32),
                                                    nan=0.0))[None, None].to(self.device)
        if self.config.input_scale != 1.0:
            scaled = [max(8, round(s * self.config.input_scale)) for s in size]
            left_t = F.interpolate(left_t, size=scaled, mode="area" if
                                   self.config.input_scale < 1 else "bilinear")
            right_t = F.interpolate(right_t, size=scaled, mode="area" if
                                    self.config.input_scale < 1 else "bilinear")
            if target is not None:
                target = F.interpolate(target, size=scaled, mode="nearest") * (
                    scaled[1] / size[1])
        if self._amp_trial_pending:
            self._amp_trial(left_t, right_t)
        timings = {"prepare": (time.perf_counter() - start) * 1e3}

        adaptive = self.config.adaptation_mode != "none" and not self.paused
        adapt = adaptive and self.frames % self.config.adapt_every_n == 0
        self.frames += 1
        recent = None
        if adaptive and target is None:
            recent = _RecentPair(left, right, left_t, right_t)
            self._recent.append(recent)
        if adapt:
            check = target is None and self.reference_check.due()
            outcome = self._adapt_on(left, right, left_t, right_t, timings, target,
                                     want_confidence, want_loss, check, recent)
        else:
            outcome = self._infer_checked(left_t, right_t, timings, want_confidence,
                                          want_loss)
        return self._finish(outcome, size, timings, start)

    def _infer_checked(self, left: torch.Tensor, right: torch.Tensor,
                       timings: dict[str, float], want_confidence: bool, want_loss: bool
                       ) -> _Outcome:
        """Inference on a frame that does not adapt; adapted weights whose prediction or
        confidence is not finite (finite weights can still overflow) go back to the initial
        ones, which predict the frame again, as the collapse guard does on adapted frames."""
        outcome = self._infer(left, right, timings, want_confidence, want_loss)
        if not self._moved or bool(torch.isfinite(outcome.disparity).all()
                                   & torch.isfinite(outcome.confidence).all()):
            return outcome
        reason = self.guard.update(spread=0.0, loss=None, finite=False)
        assert reason is not None  # a non-finite prediction always fires
        return self._collapse(reason, left, right, timings, want_confidence, want_loss)

    def _amp_trial(self, left: torch.Tensor, right: torch.Tensor) -> None:
        """Settle CPU ``amp="auto"`` by timing both precisions (``measure_cpu_autocast``)."""
        self.model.eval()
        inputs = self._network_input(left, right)

        def forward(dtype: torch.dtype | None) -> None:
            with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16,
                                                        enabled=dtype is not None):
                self._inference_forward(*inputs)
        self._amp_dtype = measure_cpu_autocast(forward, (left.shape[-2], left.shape[-1]))
        self._amp_trial_pending = False

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype in use (None: float32); on CPU ``auto`` it is settled by the
        first frame."""
        return self._amp_dtype

    def replay_step(self) -> StepResult | None:
        """One more adaptation step on one of the ``replay_buffer`` most recent pairs (drawn
        at random), for idle time: when the camera is slower than the network, the node (with
        ``idle_adaptation``) and ``eval --steps-per-frame`` turn the wait into accuracy.
        None when there is nothing to replay or adaptation is off or paused."""
        if not self._recent or self.config.adaptation_mode == "none" or self.paused:
            return None
        start = time.perf_counter()
        pair = self._recent[self._replay_random.randrange(len(self._recent))]
        timings = {"prepare": 0.0}
        outcome = self._adapt_on(pair.left, pair.right, pair.left_t, pair.right_t, timings,
                                 None, True, True, False, pair, watch=False)
        return self._finish(outcome, pair.left_t.shape[-2:], timings, start)

    def _adapt_on(self, left: np.ndarray, right: np.ndarray, left_t: torch.Tensor,
                  right_t: torch.Tensor, timings: dict[str, float],
                  target: torch.Tensor | None, want_confidence: bool, want_loss: bool,
                  check: bool, recent: _RecentPair | None = None, watch: bool = True
                  ) -> _Outcome:
        """An adaptation step on the pair, guarded; ``check``: judge it against the frozen
        reference (the schedule of ``reference_check_every``); ``watch``: otherwise judge it
        when its score triggers a check (``ReferenceCheck.triggered``; not for replay steps,
        whose output nobody sees); ``recent``: the pair's entry in the replay buffer, which
        keeps its proxy labels for replay steps."""
        # Settled before the proxy thread starts, so that its trial times the network alone.
        float32_blocks = self._training_float32_blocks(left_t, right_t)
        proxy, reused = None, False
        if target is None and self.config.adaptation_loss != "photometric":
            cached = recent.proxy if recent is not None else None
            if cached is not None and not (cached.done() and cached.exception() is not None):
                proxy, reused = cached, True
            else:
                proxy = self._start_proxy(left, right)
                if recent is not None:
                    recent.proxy = proxy
        outcome = self._adapt(left_t, right_t, timings, proxy, target, want_confidence,
                              float32_blocks, check, watch=watch and target is None)
        if reused:
            timings["proxy"] = 0.0  # computed for an earlier step on this pair
        if self.config.collapse_guard and target is None:
            # The prediction returned came from the weights before this step: the guard judges
            # the weights that produced it (and every later frame judges the step's result).
            finite, spread, out_of_image = prediction_statistics(outcome.disparity[0, 0])
            reason = self.guard.update(spread, outcome.loss if finite else None,
                                       self._disagreement, out_of_image=out_of_image,
                                       finite=finite and bool(np.isfinite(outcome.loss)))
            if reason is not None:
                inferred = self._collapse(reason, left_t, right_t, timings, want_confidence,
                                          want_loss)
                outcome = replace(outcome, disparity=inferred.disparity,
                                  confidence=inferred.confidence, loss=inferred.loss,
                                  adapted=False, reset=True, collapse=reason)
        return outcome

    def _collapse(self, reason: str, left: torch.Tensor, right: torch.Tensor,
                  timings: dict[str, float], want_confidence: bool, want_loss: bool
                  ) -> _Outcome:
        """Back to the initial weights after the guard's ``reason``; the frame's output comes
        from the restored weights, not the broken ones."""
        LOG.warning("adaptation collapsed (%s): back to the initial weights", reason)
        self.reset()
        outcome = self._infer(left, right, timings, want_confidence, want_loss)
        return replace(outcome, reset=True, collapse=reason)

    def _finish(self, outcome: _Outcome, size: torch.Size, timings: dict[str, float],
                start: float) -> StepResult:
        """The outputs at input resolution, on the host, as the one ``StepResult``."""
        output_start = time.perf_counter()
        disparity, confidence = outcome.disparity, outcome.confidence
        if disparity.shape[-2:] != size:
            factor = size[1] / disparity.shape[-1]
            disparity = F.interpolate(disparity, size=size, mode="bilinear",
                                      align_corners=False) * factor
            confidence = F.interpolate(confidence, size=size, mode="bilinear",
                                       align_corners=False)
        disparity_map = disparity[0, 0].clamp_min(0).float().cpu().numpy()
        confidence_map = confidence[0, 0].clamp(0, 1).float().cpu().numpy()
        now = time.perf_counter()
        timings["output"] = (now - output_start) * 1e3
        timings["total"] = (now - start) * 1e3
        return StepResult(disparity=disparity_map, confidence=confidence_map,
                          loss=outcome.loss, block=outcome.block, adapted=outcome.adapted,
                          reset=outcome.reset, collapse=outcome.collapse,
                          skipped=outcome.skipped, reference_won=outcome.reference_won,
                          proxy_density=outcome.proxy_density,
                          timings=timings)

    def _start_proxy(self, left: np.ndarray, right: np.ndarray) -> Future:
        """Compute the proxy labels in a worker thread (OpenCV and numpy release the GIL)."""
        if self._proxy_pool is None:
            self._proxy_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="proxy")
        config = self.config.proxy_config()
        scale = self.config.proxy_scale
        if scale != 1:
            config = replace(config, max_disparity=max(1, math.ceil(config.max_disparity * scale)))

        def run() -> tuple[ProxyLabels, float]:
            start = time.perf_counter()
            views: list[np.ndarray] = [left, right]
            if scale != 1:
                size = (max(8, round(left.shape[1] * scale)), max(8, round(left.shape[0] * scale)))
                views = [cv2.resize(view, size, interpolation=cv2.INTER_AREA) for view in views]
            labels = compute_proxy(views[0], views[1], config)
            return labels, (time.perf_counter() - start) * 1e3
        return self._proxy_pool.submit(run)

    def _proxy_targets(self, future: Future, size: torch.Size, timings: dict[str, float]
                       ) -> ProxyTargets:
        """Wait for the proxy and bring its labels to the network's input size. Raises what
        the matcher raised (ValueError, cv2.error) when it failed."""
        start = time.perf_counter()
        labels, proxy_ms = future.result()
        timings["proxy_wait"] = (time.perf_counter() - start) * 1e3
        timings["proxy"] = proxy_ms
        disparity = torch.from_numpy(labels.disparity)[None, None].to(self.device)
        confidence = torch.from_numpy(labels.confidence)[None, None].to(self.device)
        if disparity.shape[-2:] != size:
            factor = size[1] / disparity.shape[-1]
            disparity = F.interpolate(disparity, size=size, mode="nearest") * factor
            confidence = F.interpolate(confidence, size=size, mode="nearest")
        return ProxyTargets(disparity, confidence, labels.density(self.config.proxy_tau))

    def _photometric_part(self, left: torch.Tensor, right: torch.Tensor,
                          disparity: torch.Tensor, target: torch.Tensor | None,
                          identity_error: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(the photometric part of ``AdapterConfig.adaptation_loss`` for ``disparity``, with
        the smoothness term, and its error map), both None for a loss without one (proxy, or
        the oracle's ``target``). It does not need the proxy labels, so a step computes it
        while the proxy thread still runs.
        identity_error: auto-masking's unwarped error of these images, if already computed."""
        if target is not None or self.config.adaptation_loss == "proxy":
            return None, None
        return self._photometric_loss(left, right, disparity, self.config.smoothness_weight,
                                      identity_error)

    def _adaptation_loss(self, photometric: torch.Tensor | None, left: torch.Tensor,
                         disparity: torch.Tensor, proxy: ProxyTargets | None,
                         target: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of ``AdapterConfig.adaptation_loss`` for ``disparity`` from its
        ``photometric`` part (``_photometric_part``) and the proxy labels; with ``target``
        (the oracle) the L1 to it over its known pixels."""
        if target is not None:
            if target.shape[-2:] != disparity.shape[-2:]:
                factor = disparity.shape[-1] / target.shape[-1]
                target = F.interpolate(target, size=disparity.shape[-2:], mode="nearest") \
                    * factor
            known = target > 0
            return ((disparity.float() - target).abs() * known).sum() / known.sum().clamp_min(1)
        kind, smoothness = self.config.adaptation_loss, self.config.smoothness_weight
        if kind == "photometric":
            assert photometric is not None
            return photometric
        assert proxy is not None, f"the {kind} loss needs the proxy labels"
        regression = proxy_loss(disparity, proxy.disparity, proxy.confidence,
                                self.config.proxy_tau)
        if kind == "proxy":
            if smoothness > 0:
                regression = regression + smoothness * edge_aware_smoothness(disparity.float(),
                                                                             left.float())
            return regression
        assert photometric is not None
        return photometric + self.config.proxy_weight * regression

    def _photometric_loss(self, left: torch.Tensor, right: torch.Tensor,
                          disparity: torch.Tensor, smoothness: float = 0.0,
                          identity_error: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """``photometric_loss`` weighted by the learned confidence (L2A weights), with the
        photometric error compiled when ``compile`` is on."""
        return photometric_loss(left, right, disparity, smoothness, self._confidence_net,
                                error_fn=self._error_fn,
                                automask=self.config.photometric_automask,
                                occlusion=self.config.photometric_occlusion_mask,
                                identity_error=identity_error)

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=self._amp_dtype,
                              enabled=self._amp_dtype is not None)

    def _network_input(self, left: torch.Tensor, right: torch.Tensor):
        memory_format = torch.channels_last if self.config.channels_last \
            else torch.contiguous_format
        normalize = self.info.normalization.apply
        return (normalize(left).contiguous(memory_format=memory_format),
                normalize(right).contiguous(memory_format=memory_format))

    def _infer(self, left: torch.Tensor, right: torch.Tensor, timings: dict[str, float],
               want_confidence: bool, want_loss: bool) -> _Outcome:
        """Inference only: the disparity and, if wanted, the photometric loss and the
        confidence (both from the same error map)."""
        t0 = time.perf_counter()
        self.model.eval()
        with torch.inference_mode(), self._autocast():
            disparity = self._inference_forward(*self._network_input(left, right)
                                                ).disparity.float()
            t1 = time.perf_counter()
            loss_value, error = math.nan, None
            if want_loss:
                loss, error = self._photometric_loss(left, right, disparity)
                loss_value = float(loss)
            elif want_confidence:
                error = self._error_fn(left, right, disparity)
            outcome = _Outcome(disparity, self._confidence(error if want_confidence else None,
                                                           disparity), loss_value)
        t2 = time.perf_counter()
        timings["network"] = (t1 - t0) * 1e3
        timings["confidence"] = (t2 - t1) * 1e3
        timings["forward"] = (t2 - t0) * 1e3
        return outcome

    def _adapt(self, left: torch.Tensor, right: torch.Tensor, timings: dict[str, float],
               proxy_future: Future | None, target: torch.Tensor | None,
               want_confidence: bool, float32_blocks: tuple[int, ...], check: bool = False,
               watch: bool = False) -> _Outcome:
        """One adaptation step (full, or MAD on a sampled block) on the pair, with
        ``float32_blocks`` trained in float32; the outcome holds the prediction of the weights
        before the update. With ``check`` (or ``watch`` and a score that triggers a check),
        the frozen initial weights predict the pair too; when they score better
        (``safety.py``) their prediction is the one returned, and after ``reference_patience``
        lost checks in a row the step is skipped and the weights rolled back."""
        mad = self.config.adaptation_mode == "mad"
        block = self._sampler.choose() if mad else None
        trained_params = self._train_only(block)
        t0 = time.perf_counter()
        if block is not None:
            float32_blocks = tuple(b for b in float32_blocks if b == block)
        with self._autocast():
            output = self.model(*self._network_input(left, right), detach_between_blocks=mad,
                                float32_blocks=float32_blocks)
        timings["network"] = (time.perf_counter() - t0) * 1e3
        disparity = output.disparity.float()
        # The photometric terms and the confidence first: they do not need the proxy labels,
        # so they run while the proxy thread still does (on 2 cores, its matcher leaves one
        # core to them), instead of after the wait.
        terms = self._photometric_terms(output, block, left, right, target)
        confidence = self._step_confidence(left, right, disparity.detach(), terms.error,
                                           want_confidence, timings)
        # The reference predicts while the proxy thread still runs, like the terms above.
        reference = self._reference_prediction(left, right) if check else None
        proxy = None
        if proxy_future is not None:
            try:
                proxy = self._proxy_targets(proxy_future, left.shape[-2:], timings)
            except (ValueError, cv2.error) as failure:
                LOG.warning("proxy labels failed (%s); frame not adapted", failure)
                return self._predict_without_proxy(left, right, disparity.detach(), timings,
                                                   t0, f"proxy failed: {failure}",
                                                   want_confidence)
        # The share of the proxy's confident pixels the prediction misses: for the guard and
        # for the reference check, computed once.
        self._disagreement = None
        if proxy is not None and (self.config.collapse_guard or reference is not None):
            with torch.no_grad():
                self._disagreement = proxy_disagreement(
                    disparity, proxy.disparity, proxy.confidence > self.config.proxy_tau)
        block_loss, loss = self._step_losses(terms, proxy, target)
        disparity = disparity.detach()
        density = proxy.density if proxy is not None else None
        if reference is None and watch and self._moved and self._reference is not None:
            score = self._adapted_score(disparity, terms.error, proxy)
            if score is not None and self.reference_check.triggered(*score):
                reference = self._reference_prediction(left, right)
        verdict = None
        if reference is not None:
            verdict = self._judge(left, right, disparity, reference, terms.error, proxy,
                                  self._disagreement)
            if verdict.rollback:
                timings["forward"] = (time.perf_counter() - t0) * 1e3
                return self._reference_outcome(left, right, reference, verdict,
                                               float(loss.detach()), block, density,
                                               want_confidence)
            if verdict.publish_reference:
                # The weights still take their step: right after a (re)start, Adam's first
                # steps move every weight by about the rate and can make the prediction worse
                # for a few frames before it gets better (real pan: 7 % of the proxy's
                # confident pixels missed before one full step, 30-40 % after).
                disparity = reference
                with torch.no_grad():
                    confidence = self._confidence(self._error_fn(left, right, reference)
                                                  if want_confidence else None, reference)
        if self.config.anchor_weight > 0:
            block_loss = block_loss + self.config.anchor_weight * anchor_penalty(
                self._trained(block), self._source)
        timings["forward"] = (time.perf_counter() - t0) * 1e3

        t1 = time.perf_counter()
        loss_value, skipped, reset = self._update(block, block_loss, loss, trained_params)
        if skipped is None and not reset:
            self._moved = True
            if self.config.restore_fraction > 0:
                restore_fraction(self._trained(block), self._source,
                                 self.config.restore_fraction)
        timings["backward"] = (time.perf_counter() - t1) * 1e3
        return _Outcome(disparity, confidence, loss_value, block=block,
                        adapted=skipped is None and not reset, reset=reset, skipped=skipped,
                        reference_won=None if verdict is None else verdict.publish_reference,
                        proxy_density=density)

    def _trained(self, block: int | None) -> dict[str, torch.Tensor]:
        names = self._block_names[block] if block is not None else list(self._params)
        return {name: self._params[name] for name in names}

    def _reference_prediction(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """The frozen initial weights' disparity for the pair (1 x 1 x h x w)."""
        assert self._reference is not None
        with torch.no_grad(), self._autocast():
            return self._reference(*self._network_input(left, right)).disparity.float()

    def _adapted_score(self, disparity: torch.Tensor, error: torch.Tensor | None,
                       proxy: ProxyTargets | None) -> tuple[float, str] | None:
        """The adapted prediction's score as a check would judge it (its proxy score, else
        its photometric one), without the reference; None when neither is at hand."""
        if proxy is not None and self._disagreement is not None and \
                proxy.density >= MIN_PROXY_DENSITY:
            return self._disagreement, "proxy"
        if error is not None:
            with torch.no_grad():
                return photometric_score(error, disparity), "photometric"
        return None

    def _judge(self, left: torch.Tensor, right: torch.Tensor, disparity: torch.Tensor,
               reference: torch.Tensor, error: torch.Tensor | None,
               proxy: ProxyTargets | None, disagreement: float | None) -> Verdict:
        """Score the adapted and the reference prediction of the pair (``safety.py``);
        ``disagreement``: the adapted prediction's proxy score, already computed."""
        with torch.no_grad():
            if proxy is not None and disagreement is not None:
                initial = proxy_score(reference, proxy.disparity,
                                      proxy.confidence > self.config.proxy_tau, proxy.density)
                if initial is not None:
                    return self.reference_check.judge(disagreement, initial, "proxy")
            if error is None:
                error = self._error_fn(left, right, disparity)
            return self.reference_check.judge(
                photometric_score(error, disparity),
                photometric_score(self._error_fn(left, right, reference), reference),
                "photometric")

    def _reference_outcome(self, left: torch.Tensor, right: torch.Tensor,
                           reference: torch.Tensor, verdict: Verdict, loss: float,
                           block: int | None, density: float | None, want_confidence: bool
                           ) -> _Outcome:
        """The adapted weights lost often enough in a row: the reference's prediction, no
        step, and the weights rolled back to the initial ones."""
        self.model.requires_grad_(True)
        with torch.no_grad():
            error = self._error_fn(left, right, reference) if want_confidence else None
            confidence = self._confidence(error, reference)
        reason = verdict.reason()
        LOG.info("%s: back to the initial weights", reason)
        self.reset()
        return _Outcome(reference, confidence, loss, block=block, adapted=False, reset=True,
                        collapse=reason, reference_won=True, proxy_density=density)

    def _training_float32_blocks(self, left: torch.Tensor, right: torch.Tensor
                                 ) -> tuple[int, ...]:
        """The blocks adaptation steps run in float32: under bf16 autocast on a CPU, those a
        timed trial at the first adaptation step's size found faster that way
        (``measure_float32_blocks``; a camera's size is fixed); none at other sizes, whose
        answer may differ (on small images every block was faster in float32), nor otherwise.
        """
        if self._amp_dtype != torch.bfloat16 or self.device.type != "cpu":
            return ()
        size = (left.shape[-2], left.shape[-1])
        if self._float32_blocks is None:
            inputs = self._network_input(left, right)

            def train_step(block: int, float32: bool) -> None:
                self._train_only(block)
                with self._autocast():
                    output = self.model(*inputs, detach_between_blocks=True,
                                        float32_blocks=(block,) if float32 else ())
                output.levels[block].float().mean().backward()
                self.model.zero_grad(set_to_none=True)
            self._float32_blocks = size, measure_float32_blocks(train_step, BLOCKS, size)
            self.model.requires_grad_(True)
        measured_size, blocks = self._float32_blocks
        return blocks if size == measured_size else ()

    def _train_only(self, block: int | None) -> list[torch.nn.Parameter]:
        """Make ``block``'s parameters (all of them for None) the only ones that require
        gradients and put the model in training mode; returns those parameters."""
        names = self._block_names[block] if block is not None else list(self._params)
        trained_params = [self._params[name] for name in names]
        # Only the trained parameters require gradients, so autograd records nothing for the
        # rest of the network: a MAD step back-propagates through one block only.
        self.model.requires_grad_(False)
        for param in trained_params:
            param.requires_grad_(True)
        self.model.train()
        return trained_params

    def _predict_without_proxy(self, left: torch.Tensor, right: torch.Tensor,
                               disparity: torch.Tensor, timings: dict[str, float],
                               t0: float, reason: str, want_confidence: bool) -> _Outcome:
        """No labels for this frame: its prediction, with the photometric loss, and the
        weights kept."""
        self.model.requires_grad_(True)
        with torch.no_grad():
            loss, error_map = self._photometric_loss(left, right, disparity)
        start = time.perf_counter()
        confidence = self._confidence(error_map if want_confidence else None, disparity)
        now = time.perf_counter()
        timings["confidence"] = (now - start) * 1e3
        timings["forward"] = (now - t0) * 1e3
        return _Outcome(disparity, confidence, float(loss), skipped=reason)

    def _photometric_terms(self, output: MADNetOutput, block: int | None, left: torch.Tensor,
                           right: torch.Tensor, target: torch.Tensor | None) -> _LossTerms:
        """The parts of a step's two losses that do not need the proxy labels (see
        ``_LossTerms``). A MAD step on a block other than 2 back-propagates the loss of that
        block's own prediction (MAD's block loss)."""
        disparity = output.disparity.float()
        if block is None or block == 2:
            photometric, error = self._photometric_part(left, right, disparity, target)
            return _LossTerms(left, disparity, photometric, left, disparity, photometric,
                              error)
        # Both losses auto-mask against the same unwarped error when the block's loss is at
        # full resolution: computed once.
        identity = unwarped_error(left, right, disparity, self._error_fn) if \
            self.config.photometric_automask and self.config.mad_loss_scale == 1 and \
            self.config.adaptation_loss != "proxy" and target is None else None
        block_left, block_right, block_disparity = self._block_loss_inputs(output, block, left,
                                                                           right)
        block_photometric, _ = self._photometric_part(block_left, block_right, block_disparity,
                                                      target, identity)
        with torch.no_grad():
            photometric, error = self._photometric_part(left, right, disparity.detach(),
                                                        target, identity)
        return _LossTerms(block_left, block_disparity, block_photometric, left,
                          disparity.detach(), photometric, error)

    def _step_losses(self, terms: _LossTerms, proxy: ProxyTargets | None,
                     target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to back-propagate, the loss of the final prediction to report) from
        ``terms`` and the proxy labels."""
        block_loss = self._adaptation_loss(terms.block_photometric, terms.block_left,
                                           terms.block_disparity, proxy, target)
        if terms.block_disparity is terms.disparity:
            return block_loss, block_loss
        with torch.no_grad():
            loss = self._adaptation_loss(terms.photometric, terms.left, terms.disparity, proxy,
                                         target)
        return block_loss, loss

    def _step_confidence(self, left: torch.Tensor, right: torch.Tensor,
                         disparity: torch.Tensor, error: torch.Tensor | None,
                         want_confidence: bool, timings: dict[str, float]) -> torch.Tensor:
        """The published confidence of an adaptation step's prediction, from the loss's error
        map (computed here for a loss that has none, e.g. the proxy loss)."""
        start = time.perf_counter()
        if not want_confidence:
            error = None
        elif error is None:
            with torch.no_grad():
                error = self._error_fn(left, right, disparity)
        confidence = self._confidence(None if error is None else error.detach(), disparity)
        timings["confidence"] = (time.perf_counter() - start) * 1e3
        return confidence

    def _update(self, block: int | None, block_loss: torch.Tensor, loss: torch.Tensor,
                trained_params: list[torch.nn.Parameter]) -> tuple[float, str | None, bool]:
        """The optimiser step (guarded), the loss threshold's reset and the sampler's update.
        Returns (the reported loss, why the step was undone or None, whether the weights were
        reset)."""
        rate = self.config.learning_rate if block is None else \
            self.config.mad_learning_rate * self.config.mad_block_rate_factor ** (block - 2)
        if self.config.warmup_steps:
            rate *= min(1.0, (self._steps_since_reset + 1) / self.config.warmup_steps)
        self._steps_since_reset += 1
        for group in self._optimizer.param_groups:
            group["lr"] = rate
        loss_value, skipped = self._guarded_update(block_loss, loss, trained_params)
        threshold = self.config.reset_loss_threshold
        reset = threshold > 0 and loss_value > threshold
        if reset:
            LOG.warning("loss %.3f above reset threshold %.3f: back to the initial weights",
                        loss_value, threshold)
            self.reset()
        elif skipped:
            LOG.warning("adaptation step skipped (%s); the last good weights are kept", skipped)
        if block is not None and not reset:
            self._sampler.update(loss_value, block)
        self.model.requires_grad_(True)
        return loss_value, skipped, reset

    def _block_loss_inputs(self, output: MADNetOutput, block: int, left: torch.Tensor,
                           right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def _check_backoff(config: AdapterConfig) -> int:
    """The reference check's largest interval: ``reference_check_backoff`` for MAD, whose
    step changes one block; 1 for full steps, which change every prediction at once (on the
    harsh development sequences, full adaptation checked with a back-off to 8 frames reached
    1.05 x no adaptation, checked on every frame 1.02 x; MAD 1.01 x either way)."""
    return config.reference_check_backoff if config.adaptation_mode == "mad" else 1


def _needs_reference(config: AdapterConfig) -> bool:
    """Whether the frozen initial weights are needed: by the reference check or an anchor."""
    return bool(config.reference_check_every or config.anchor_weight or
                config.restore_fraction)


def _all_finite(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """A 0-d bool tensor on the tensors' device: every element of every tensor is finite."""
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()
