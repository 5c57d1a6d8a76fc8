"""The online adapter: predict disparity for a rectified pair and, in the same step, fine-tune
MADNet on that pair with a self-supervised loss: photometric, confidence-guided regression to
a traditional matcher's proxy labels, or both.

Every entry point (evaluation, benchmark, the ROS node, training scripts) uses this class, so
there is one implementation of a full step and of a MAD step. The class orchestrates; its
parts live beside it: the configuration (``config.py``), how the network runs
(``runtime.py``), the step's losses (``step_loss.py``), the proxy thread
(``proxy_worker.py``), the weight update (``update.py``), the frozen-reference check
(``reference.py``, ``safety.py``), the replay buffer (``replay_buffer.py``) and the result
(``results.py``).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from concurrent.futures import Future
from dataclasses import replace
from functools import partial

import cv2
import numpy as np
import torch

from ..network.confidence_net import ConfidenceNetwork
from ..network.madnet import BLOCKS, MADNet
from ..network.weights import WeightsInfo, load_model, save_weights
from .config import AdapterConfig
from .confidence import published_confidence
from .guard import CollapseGuard, prediction_statistics, proxy_disagreement
from .inputs import step_tensors
from .precision import autocast_dtype
from .proxy import check_confidence_available
from .proxy_worker import ProxyTargets, ProxyWorker, proxy_targets
from .reference import FrozenReference, adapted_score, check_backoff, judge, needs_reference
from .replay_buffer import RecentPair, ReplayBuffer
from .results import Outcome, StepResult, to_step_result
from .runtime import ModelRuntime
from .safety import ReferenceCheck, Verdict, anchor_penalty, restore_fraction
from .sampler import BlockSampler
from .step_loss import StepLoss
from .update import guarded_update, learning_rate

LOG = logging.getLogger(__name__)

# AdapterConfig and StepResult are imported from here too (re-exported).
__all__ = ["AdapterConfig", "OnlineAdapter", "StepResult"]


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
        self._sampler = BlockSampler(BLOCKS, config.sampler_config(), seed=config.seed)
        self._optimizer = self._make_optimizer()
        self._proxy_worker = ProxyWorker()
        self._confidence_net = self._load_confidence_network()
        self.guard = CollapseGuard()
        self._disagreement: float | None = None
        self._recent = ReplayBuffer(config.replay_buffer, config.seed)
        self._runtime = ModelRuntime(self.model, self.device, config,
                                     autocast_dtype(config.amp, self.device))
        self.reference_check = ReferenceCheck(config.reference_margin, config.reference_patience,
                                              config.reference_check_every,
                                              check_backoff(config))
        self._moved = False
        self._steps_since_reset = 0
        self._build_reference()
        if config.adaptation_loss != "photometric":
            # Refused here, with the reason, rather than failing every step's proxy.
            check_confidence_available(config.proxy_config())

    def _build_reference(self) -> None:
        """The frozen initial weights, for the reference check and the anchors (None when
        none of them is on)."""
        self._reference = FrozenReference(self.model, self._initial_state) \
            if needs_reference(self.config) else None

    def _load_confidence_network(self) -> ConfidenceNetwork | None:
        """L2A's confidence network if the weights carry one (frozen: online it only weights
        the loss and gives the published confidence)."""
        network = ConfidenceNetwork.from_tensors(self.extra_tensors)
        if network is not None:
            network.to(self.device).eval().requires_grad_(False)
        return network

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
            self._recent.resize(config.replay_buffer)
        if (config.proxy_config(), config.proxy_scale) != (old.proxy_config(), old.proxy_scale):
            self._recent.forget_proxy_labels()
        self.reference_check.margin = config.reference_margin
        self.reference_check.patience = config.reference_patience
        if (config.reference_check_every, check_backoff(config)) != (
                old.reference_check_every, check_backoff(old)):
            self.reference_check.every = config.reference_check_every
            self.reference_check.backoff = check_backoff(config)
            self.reference_check.restart()
        if (self._reference is not None) != needs_reference(config):
            self._build_reference()
        fast_path = ("amp", "channels_last", "cudnn_benchmark", "compile")
        if any(getattr(config, f) != getattr(old, f) for f in fast_path):
            self._runtime.apply_fast_path(config, amp_dtype)

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

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype in use (None: float32); on CPU ``auto`` it is settled by the
        first frame."""
        return self._runtime.amp_dtype

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
        left_t, right_t, target, size = step_tensors(left, right, ground_truth, self.device,
                                                     self.config.input_scale)
        self._runtime.settle_precision(left_t, right_t, self.info.normalization)
        timings = {"prepare": (time.perf_counter() - start) * 1e3}

        adaptive = self.config.adaptation_mode != "none" and not self.paused
        adapt = adaptive and self.frames % self.config.adapt_every_n == 0
        self.frames += 1
        recent = None
        if adaptive and target is None:
            recent = self._recent.add(left, right, left_t, right_t)
        if adapt:
            check = target is None and self.reference_check.due()
            outcome = self._adapt_on(left, right, left_t, right_t, timings, target,
                                     want_confidence, want_loss, check, recent)
        else:
            outcome = self._infer_checked(left_t, right_t, timings, want_confidence,
                                          want_loss)
        return to_step_result(outcome, size, timings, start)

    def replay_step(self) -> StepResult | None:
        """One more adaptation step on one of the ``replay_buffer`` most recent pairs (drawn
        at random), for idle time: when the camera is slower than the network, the node (with
        ``idle_adaptation``) and ``eval --steps-per-frame`` turn the wait into accuracy.
        None when there is nothing to replay or adaptation is off or paused."""
        if not self._recent or self.config.adaptation_mode == "none" or self.paused:
            return None
        start = time.perf_counter()
        pair = self._recent.draw()
        timings = {"prepare": 0.0}
        outcome = self._adapt_on(pair.left, pair.right, pair.left_t, pair.right_t, timings,
                                 None, True, True, False, pair, watch=False)
        if outcome.adapted:
            # The weights moved without a check: the next frame is checked, whatever the
            # back-off (MAD with one idle step a frame and the back-off reached 1.08 x no
            # adaptation on the near-range poses).
            self.reference_check.check_next()
        return to_step_result(outcome, pair.left_t.shape[-2:], timings, start)

    def _infer_checked(self, left: torch.Tensor, right: torch.Tensor,
                       timings: dict[str, float], want_confidence: bool, want_loss: bool
                       ) -> Outcome:
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

    def _adapt_on(self, left: np.ndarray, right: np.ndarray, left_t: torch.Tensor,
                  right_t: torch.Tensor, timings: dict[str, float],
                  target: torch.Tensor | None, want_confidence: bool, want_loss: bool,
                  check: bool, recent: RecentPair | None = None, watch: bool = True
                  ) -> Outcome:
        """An adaptation step on the pair, guarded; ``check``: judge it against the frozen
        reference (the schedule of ``reference_check_every``); ``watch``: otherwise judge it
        when its score triggers a check (``ReferenceCheck.triggered``; not for replay steps,
        whose output nobody sees); ``recent``: the pair's entry in the replay buffer, which
        keeps its proxy labels for replay steps."""
        # Settled before the proxy thread starts, so that its trial times the network alone.
        float32_blocks = self._runtime.training_float32_blocks(left_t, right_t,
                                                               self.info.normalization)
        proxy, reused = None, False
        if target is None and self.config.adaptation_loss != "photometric":
            start = partial(self._start_proxy, left, right)
            proxy, reused = recent.proxy_labels(start) if recent is not None else (start(), False)
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
                  ) -> Outcome:
        """Back to the initial weights after the guard's ``reason``; the frame's output comes
        from the restored weights, not the broken ones."""
        LOG.warning("adaptation collapsed (%s): back to the initial weights", reason)
        self.reset()
        outcome = self._infer(left, right, timings, want_confidence, want_loss)
        return replace(outcome, reset=True, collapse=reason)

    def _infer(self, left: torch.Tensor, right: torch.Tensor, timings: dict[str, float],
               want_confidence: bool, want_loss: bool) -> Outcome:
        """Inference only: the disparity and, if wanted, the photometric loss and the
        confidence (both from the same error map)."""
        t0 = time.perf_counter()
        self.model.eval()
        with torch.inference_mode(), self._runtime.autocast():
            disparity = self._runtime.inference_forward(*self._network_input(left, right)
                                                        ).disparity.float()
            t1 = time.perf_counter()
            loss_value, error = math.nan, None
            if want_loss:
                loss, error = self._losses.photometric_loss(left, right, disparity)
                loss_value = float(loss)
            elif want_confidence:
                error = self._runtime.error_fn(left, right, disparity)
            outcome = Outcome(disparity, self._confidence(error if want_confidence else None,
                                                          disparity), loss_value)
        t2 = time.perf_counter()
        timings["network"] = (t1 - t0) * 1e3
        timings["confidence"] = (t2 - t1) * 1e3
        timings["forward"] = (t2 - t0) * 1e3
        return outcome

    def _adapt(self, left: torch.Tensor, right: torch.Tensor, timings: dict[str, float],
               proxy_future: Future | None, target: torch.Tensor | None,
               want_confidence: bool, float32_blocks: tuple[int, ...], check: bool = False,
               watch: bool = False) -> Outcome:
        """One adaptation step (full, or MAD on a sampled block) on the pair, with
        ``float32_blocks`` trained in float32; the outcome holds the prediction of the weights
        before the update. With ``check`` (or ``watch`` and a score that triggers a check),
        the frozen initial weights predict the pair too; when they score better
        (``safety.py``) their prediction is the one returned, and after ``reference_patience``
        lost checks in a row the step is skipped and the weights rolled back."""
        block = self._sampler.choose() if self.config.adaptation_mode == "mad" else None
        trained_params = self._runtime.train_only(block)
        t0 = time.perf_counter()
        output = self._runtime.train_forward(left, right, self.info.normalization, block,
                                              float32_blocks)
        timings["network"] = (time.perf_counter() - t0) * 1e3
        disparity = output.disparity.float()
        # The photometric terms, the confidence and the reference's prediction first: they do
        # not need the proxy labels, so they run while the proxy thread still does (on 2
        # cores, its matcher leaves one core to them), instead of after the wait.
        terms = self._losses.photometric_terms(output, block, left, right, target)
        confidence = self._step_confidence(left, right, disparity.detach(), terms.error,
                                           want_confidence, timings)
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
        self._disagreement = self._proxy_disagreement(disparity, proxy, reference is not None)
        block_loss, loss = self._losses.step_losses(terms, proxy, target)
        disparity = disparity.detach()
        density = proxy.density if proxy is not None else None
        if reference is None and watch:
            reference = self._triggered_reference(left, right, disparity, terms.error, proxy)
        verdict = None
        if reference is not None:
            verdict = self._judge(left, right, disparity, reference, terms.error, proxy)
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
                confidence = self._published_confidence(left, right, reference, want_confidence)
        block_loss = self._anchored(block_loss, block)
        timings["forward"] = (time.perf_counter() - t0) * 1e3
        t1 = time.perf_counter()
        loss_value, skipped, reset = self._update(block, block_loss, loss, trained_params)
        timings["backward"] = (time.perf_counter() - t1) * 1e3
        return Outcome(disparity, confidence, loss_value, block=block,
                       adapted=skipped is None and not reset, reset=reset, skipped=skipped,
                       reference_won=None if verdict is None else verdict.publish_reference,
                       proxy_density=density)

    def _anchored(self, loss: torch.Tensor, block: int | None) -> torch.Tensor:
        """``loss`` with the L2-SP anchor's penalty on the trained weights (``anchor_weight``;
        none when 0)."""
        if self.config.anchor_weight <= 0:
            return loss
        assert self._reference is not None
        return loss + self.config.anchor_weight * anchor_penalty(self._runtime.trained(block),
                                                                 self._reference.parameters)

    def _proxy_disagreement(self, disparity: torch.Tensor, proxy: ProxyTargets | None,
                            checked: bool) -> float | None:
        """The share of the proxy's confident pixels the prediction misses: for the guard and
        for the reference check (when ``checked``), computed once; None when neither needs it
        or without proxy labels."""
        if proxy is None or not (self.config.collapse_guard or checked):
            return None
        with torch.no_grad():
            return proxy_disagreement(disparity, proxy.disparity,
                                      proxy.confidence > self.config.proxy_tau)

    def _update(self, block: int | None, block_loss: torch.Tensor, loss: torch.Tensor,
                trained_params: list[torch.nn.Parameter]) -> tuple[float, str | None, bool]:
        """The optimiser step (guarded), the loss threshold's reset, the sampler's update and
        ``restore_fraction``. Returns (the reported loss, why the step was undone or None,
        whether the weights were reset)."""
        rate = learning_rate(self.config, block, self._steps_since_reset)
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
        if skipped is None and not reset:
            self._moved = True
            if self.config.restore_fraction > 0:
                assert self._reference is not None
                restore_fraction(self._runtime.trained(block), self._reference.parameters,
                                 self.config.restore_fraction)
        return loss_value, skipped, reset

    def _guarded_update(self, loss: torch.Tensor, reported_loss: torch.Tensor,
                        params: list[torch.nn.Parameter]) -> tuple[float, str | None]:
        """``guarded_update`` with the adapter's optimiser and fp16 loss scaler."""
        return guarded_update(self._optimizer, self._runtime.scaler, loss, reported_loss,
                              params, self.device)

    def _predict_without_proxy(self, left: torch.Tensor, right: torch.Tensor,
                               disparity: torch.Tensor, timings: dict[str, float],
                               t0: float, reason: str, want_confidence: bool) -> Outcome:
        """No labels for this frame: its prediction, with the photometric loss, and the
        weights kept."""
        self.model.requires_grad_(True)
        with torch.no_grad():
            loss, error_map = self._losses.photometric_loss(left, right, disparity)
        start = time.perf_counter()
        confidence = self._confidence(error_map if want_confidence else None, disparity)
        now = time.perf_counter()
        timings["confidence"] = (now - start) * 1e3
        timings["forward"] = (now - t0) * 1e3
        return Outcome(disparity, confidence, float(loss), skipped=reason)

    # --- parts of a step ----------------------------------------------------------------
    @property
    def _losses(self) -> StepLoss:
        """The step's losses under the current configuration, error function and L2A
        confidence network."""
        return StepLoss(self.config, self._runtime.error_fn, self._confidence_net)

    def _network_input(self, left: torch.Tensor, right: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._runtime.network_input(left, right, self.info.normalization)

    def _start_proxy(self, left: np.ndarray, right: np.ndarray) -> Future:
        """Compute the pair's proxy labels in the worker thread (``ProxyWorker.start``)."""
        return self._proxy_worker.start(left, right, self.config.proxy_config(),
                                        self.config.proxy_scale)

    def _proxy_targets(self, future: Future, size: torch.Size, timings: dict[str, float]
                       ) -> ProxyTargets:
        """Wait for the proxy and bring its labels to the network's input ``size``
        (``proxy_targets``)."""
        return proxy_targets(future, size, self.device, self.config.proxy_tau, timings)

    def _confidence(self, error: torch.Tensor | None, disparity: torch.Tensor) -> torch.Tensor:
        """``published_confidence`` with the L2A confidence network, if any."""
        return published_confidence(error, disparity, self._confidence_net)

    def _published_confidence(self, left: torch.Tensor, right: torch.Tensor,
                              disparity: torch.Tensor, want_confidence: bool) -> torch.Tensor:
        """The published confidence of a prediction without an error map yet."""
        with torch.no_grad():
            return self._confidence(self._runtime.error_fn(left, right, disparity)
                                    if want_confidence else None, disparity)

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
                error = self._runtime.error_fn(left, right, disparity)
        confidence = self._confidence(None if error is None else error.detach(), disparity)
        timings["confidence"] = (time.perf_counter() - start) * 1e3
        return confidence

    # --- the frozen-reference check (reference.py, safety.py) -----------------------------
    def _reference_prediction(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """The frozen initial weights' disparity for the pair (1 x 1 x h x w)."""
        assert self._reference is not None
        return self._reference.predict(self._runtime, left, right, self.info.normalization)

    def _triggered_reference(self, left: torch.Tensor, right: torch.Tensor,
                             disparity: torch.Tensor, error: torch.Tensor | None,
                             proxy: ProxyTargets | None) -> torch.Tensor | None:
        """Between scheduled checks: the reference's prediction when the adapted weights have
        moved and their score triggers a check (``ReferenceCheck.triggered``), else None."""
        if not self._moved or self._reference is None:
            return None
        score = adapted_score(disparity, error, proxy, self._disagreement)
        if score is None or not self.reference_check.triggered(*score):
            return None
        return self._reference_prediction(left, right)

    def _judge(self, left: torch.Tensor, right: torch.Tensor, disparity: torch.Tensor,
               reference: torch.Tensor, error: torch.Tensor | None, proxy: ProxyTargets | None
               ) -> Verdict:
        """The check's verdict on the adapted and the reference prediction (``judge``)."""
        return judge(self.reference_check, left, right, disparity, reference, error, proxy,
                     self._disagreement, self.config.proxy_tau, self._runtime.error_fn)

    def _reference_outcome(self, left: torch.Tensor, right: torch.Tensor,
                           reference: torch.Tensor, verdict: Verdict, loss: float,
                           block: int | None, density: float | None, want_confidence: bool
                           ) -> Outcome:
        """The adapted weights lost often enough in a row: the reference's prediction, no
        step, and the weights rolled back to the initial ones."""
        self.model.requires_grad_(True)
        confidence = self._published_confidence(left, right, reference, want_confidence)
        reason = verdict.reason()
        LOG.info("%s: back to the initial weights", reason)
        self.reset()
        return Outcome(reference, confidence, loss, block=block, adapted=False, reset=True,
                       collapse=reason, reference_won=True, proxy_density=density)
