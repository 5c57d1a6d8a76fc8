"""The adapter's configuration: ``AdapterConfig``, every option of online adaptation declared
once (``options.py``), and its validation."""

from __future__ import annotations

from dataclasses import dataclass

from ..matching.sgbm import SGBM_MODES
from ..network.madnet import BLOCKS
from ..options import check_options, option
from .proxy import CONFIDENCE_MEASURES, PROXY_METHODS, ProxyConfig
from .sampler import SAMPLING_STRATEGIES, SamplerConfig

MODES = ("none", "full", "mad")
OPTIMIZERS = ("adam", "sgd")
AMP_MODES = ("auto", "off", "fp16", "bf16")
LOSSES = ("photometric", "proxy", "both")


@dataclass(frozen=True)
class AdapterConfig:
    """How the adapter adapts: every field is an option declared with ``option()``, under the
    name the node's parameter and the command line's flag also have (``options.py``).
    Validated by ``validate()``, which has no side effects. The options marked ``node=False``
    are not node parameters: experiments and settings of offline runs, flags of ``stereo-adapt
    eval`` and ``adapt`` (some of ``bench``), at their defaults in the node (which left the
    node and why: docs/adaptation.md, "Parameters that left the node").

    In MAD mode the sampled block's own prediction takes the loss, the proxy's too (MAD++). The
    proxy (``proxy.py``) runs on the CPU in a thread while the network predicts.
    The fast-path switches (``amp``, ``channels_last``, ``cudnn_benchmark``, ``compile``) are
    measured by ``stereo-adapt bench --compare``. With ``amp``, the disparity-predicting layers
    and the losses still run in float32; on a CPU with native bf16, ``auto`` is settled by a
    timed trial of both precisions at the first frame's size (``precision.py``;
    docs/performance.md); ``compile`` pays only after a minute of compilation.
    """

    adaptation_mode: str = option(
        "mad", "Online adaptation: none (inference only), full (one step on the whole network, "
        "loss on its final output) or mad (one sampled block per frame, loss on that block's "
        "own prediction).", choices=MODES)
    learning_rate: float = option(
        1e-4, "Learning rate of the online optimiser for full steps (how the default was "
        "chosen: docs/adaptation.md).", low=1e-8, high=1.0)
    mad_learning_rate: float = option(
        3e-5, "Learning rate of MAD steps, one block at a time (how the default was chosen: "
        "docs/adaptation.md).", low=1e-8, high=1.0)
    mad_block_rate_factor: float = option(
        1.0, "Experiment: per-block rates of MAD steps: block b (2: the finest, with the "
        "refinement; 6: the coarsest) trains at mad_learning_rate x this ** (b - 2) (1: one "
        "rate for all blocks; no factor tried did better, docs/adaptation.md).", low=0.01,
        high=100.0, node=False)
    optimizer: str = option("adam", "Online optimiser (sgd with momentum).", choices=OPTIMIZERS,
                            node=False)
    momentum: float = option(0.9, "Momentum of the sgd optimiser (0: plain gradient descent, "
                             "as L2A's inner loop).", low=0.0, high=0.999, node=False)
    mad_sampling: str = option("probabilistic", "How MAD picks the block to train (see "
                               "BlockSampler).", choices=SAMPLING_STRATEGIES, node=False)
    mad_fixed_block: int = option(2, "The block trained when mad_sampling is fixed.",
                                  low=min(BLOCKS), high=max(BLOCKS), node=False)
    mad_loss_scale: float = option(
        1.0, "Experiment: MAD steps on blocks 3-6 compute the block's photometric loss on "
        "images resized by this (1: full resolution, as the original; 0.25: the network's "
        "output resolution, a cheaper step; block 2 and full steps always use full "
        "resolution; docs/performance.md). Needs adaptation_loss photometric below 1.",
        low=0.1, high=1.0, node=False)
    adapt_every_n: int = option(1, "Adapt on one frame in n (the others are inference only).",
                                low=1, high=1000)
    reset_loss_threshold: float = option(
        0.0, "Experiment: back to the initial weights when a frame's loss exceeds this (0: "
        "never; the original's safety valve; collapse_guard and reference_check_every do this "
        "job).", low=0.0, high=10.0, node=False)
    smoothness_weight: float = option(0.0, "Experiment: weight of the edge-aware smoothness "
                                      "loss term (0: the original's loss).", low=0.0,
                                      high=10.0, node=False)
    photometric_automask: bool = option(
        True, "Photometric loss per pixel as the minimum of the warped and the unwarped "
        "reconstruction error (MADNet 2's auto-masking): pixels the unwarped right view "
        "already explains give no gradient (docs/adaptation.md).", node=False)
    photometric_occlusion_mask: bool = option(
        False, "Experiment: leave out of the photometric loss the pixels the prediction itself "
        "says the right camera cannot see (out of view, or occluded by a nearer surface).",
        node=False)
    collapse_guard: bool = option(
        True, "Return to the initial weights when adaptation collapses: the disparity map "
        "goes flat, the loss spikes, or the prediction leaves the proxy's confident pixels "
        "(see guard.py).")
    reference_check_every: int = option(
        1, "Do no harm: every n-th adapted frame (in mad mode thinned out while the adapted "
        "weights hold, see reference_check_backoff) the initial weights, kept frozen, predict it "
        "too; the prediction that misses fewer of the proxy's confident pixels (without "
        "proxy labels: with the lower photometric error) is published, and adapted weights "
        "that lose reference_patience checks in a row are rolled back to the initial ones "
        "(0: off; one more inference per check; safety.py, docs/adaptation.md).", low=0,
        high=1000)
    reference_check_backoff: int = option(
        8, "Largest interval of the reference check's schedule in mad mode, in adapted "
        "frames: after each check the adapted weights do not lose the interval doubles up to "
        "this, after one they lose it returns to reference_check_every, and a frame whose "
        "adapted score is worse than at the last check by a trigger is checked at once "
        "(1: the fixed schedule). Full mode keeps the fixed schedule: a full step can change "
        "every prediction at once (safety.py, docs/adaptation.md).",
        low=1, high=1000, node=False)
    reference_margin: float = option(
        0.01, "How much worse than the frozen reference the adapted weights may score before "
        "a check counts as lost: a share of the proxy's confident pixels, or a relative "
        "photometric error (the better-scoring prediction is published either way).",
        low=0.0, high=1.0, node=False)
    reference_patience: int = option(
        3, "Checks lost in a row before the adapted weights are rolled back to the initial "
        "ones (how the default was chosen: docs/adaptation.md).", low=1, high=100, node=False)
    warmup_steps: int = option(
        20, "The rate rises linearly to its value over this many steps after each start or "
        "reset (0: none): Adam's first steps move every weight by about the rate "
        "(docs/adaptation.md).", low=0, high=10000, node=False)
    anchor_weight: float = option(
        0.0, "L2-SP anchor: adds this x the squared distance of the trained weights to the "
        "initial ones to the adaptation loss (0: off).", low=0.0, high=1e9, node=False)
    restore_fraction: float = option(
        0.0, "CoTTA's stochastic restore: after each step, each trained weight returns to "
        "its initial value with this probability (0: off).", low=0.0, high=1.0, node=False)
    replay_buffer: int = option(
        4, "Recent pairs kept for extra adaptation steps in idle time (replay_step; the node's "
        "idle_adaptation, eval's --steps-per-frame).", low=1, high=64, node=False)
    input_scale: float = option(
        1.0, "The network runs on images resized by this factor; disparity comes back in "
        "pixels of the input image.", low=0.05, high=4.0)
    adaptation_loss: str = option(
        "both", "Adaptation loss: photometric (SSIM + L1 reconstruction), proxy "
        "(confidence-guided regression to a traditional matcher's disparity, computed on the "
        "CPU in parallel; MAD++ in mad mode) or both (photometric + proxy_weight x proxy; how "
        "the default was chosen: docs/adaptation.md).", choices=LOSSES)
    proxy_method: str = option("sgbm", "Proxy-label matcher: OpenCV SGBM, AD or census block "
                               "matching.", choices=PROXY_METHODS)
    proxy_confidence: str = option(
        "learned", "Proxy confidence: lr (left-right consistency), peak (uniqueness), "
        "combined (their product) or learned (the shipped CCNN-style network, "
        "models/proxy_confidence.safetensors).", choices=CONFIDENCE_MEASURES)
    proxy_tau: float = option(0.8, "Only proxy pixels with confidence above this are "
                              "regressed.", low=0.0, high=0.999, node=False)
    proxy_weight: float = option(0.1, "Weight of the proxy term when adaptation_loss is both.",
                                 low=1e-6, high=1000.0)
    proxy_max_disparity: int = option(128, "Proxy search range, pixels of the input image.",
                                      low=1, high=1024)
    proxy_sgbm_mode: str = option("sgbm", "OpenCV SGBM variant of the sgbm proxy.",
                                  choices=tuple(SGBM_MODES), node=False)
    proxy_pad: bool = option(
        True, "The sgbm proxy matches each view with its search range's width of replicated "
        "columns added at the border where its matches leave the other image, so that the "
        "pixels there whose match is inside it get labels (without: none in the leftmost "
        "proxy_max_disparity columns).", node=False)
    proxy_scale: float = option(
        1.0, "Experiment: the proxy matches images resized by this (0.5: a quarter of the "
        "pixels, its range halved too), and its labels are brought back to the network's "
        "size; cheaper, less accurate (docs/performance.md).", low=0.25, high=1.0, node=False)
    amp: str = option(
        "auto", "Mixed precision: auto (on CUDA bf16 where supported, else fp16 with loss "
        "scaling; on a CPU with native bf16, AVX512-BF16 or AMX, whichever of bf16 and float32 "
        "a timed trial finds faster; else float32), off (float32), fp16 (CUDA only) or bf16.",
        choices=AMP_MODES, node=False)
    channels_last: bool = option(True, "NHWC memory layout for the convolutions (faster with "
                                 "oneDNN and cuDNN).", node=False)
    cudnn_benchmark: bool = option(True, "Let cuDNN pick the fastest kernels for the (fixed) "
                                   "input size.", node=False)
    compile: bool = option(False, "torch.compile the inference forward and the photometric "
                           "error (worth it on CUDA).", node=False)
    seed: int = option(0, "Seed of MAD's block sampling.", node=False)

    def validate(self) -> None:
        """Raise ValueError with the reason if any field is out of range."""
        check_options(self)
        if self.mad_loss_scale != 1 and self.adaptation_loss != "photometric":
            raise ValueError("mad_loss_scale below 1 needs adaptation_loss photometric (proxy "
                             f"labels are full resolution), got {self.adaptation_loss!r}")
        self.proxy_config().validate()
        self.sampler_config().validate(BLOCKS)

    def proxy_config(self) -> ProxyConfig:
        return ProxyConfig(proxy_method=self.proxy_method,
                           proxy_confidence=self.proxy_confidence,
                           max_disparity=self.proxy_max_disparity,
                           proxy_sgbm_mode=self.proxy_sgbm_mode,
                           proxy_pad=self.proxy_pad)

    def sampler_config(self) -> SamplerConfig:
        return SamplerConfig(strategy=self.mad_sampling, fixed_block=self.mad_fixed_block)
