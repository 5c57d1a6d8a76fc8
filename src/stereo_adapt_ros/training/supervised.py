"""Supervised pretraining of MADNet on synthetic stereo, on one or many devices.

Three data sources, mixed per step (``photo_ratio`` of the pairs from the second,
``harsh_ratio`` from the third): the procedural world (``training_data/synthetic.py``, exact
ray-cast scenes), stereo made from single real photographs (``training_data/photo_stereo.py``,
the train split of the photo library) and the harsh scene kinds (``training_data/harsh.py``:
grey chessboards at near range, repetitive and textureless walls, near clutter). Every pair
then goes through the augmentation of ``training_data/augment.py`` (on by default): per-view
colour, noise and blur, right-view occlusion boxes, vertical jitter, and a random zoom and
stretch.

Loss: the multi-scale L1 of ``losses.py`` to the exact ground truth.

Data: every step renders fresh scenes. With ``reuse`` > 1 (for CPU runs, where rendering costs
as much as a training step) each step renders only ``batch / reuse`` scenes per source into a
pool of the last ``pool`` scenes and trains on random windows of pool scenes: the same left,
right and ground-truth window, so the supervision stays exact (right-image content that falls
outside the window is simply out of view, as at any image border). Windows are cut
``WINDOW_MARGIN`` times larger than ``crop`` where the scene allows, so that the augmentation's
zoom can shrink them to ``crop`` as well as enlarge them.

Scale-out: run under ``torchrun``; each rank renders its own data (seeded by step and rank),
gradients are averaged by DistributedDataParallel (NCCL on CUDA, gloo on CPU), and rank 0
validates and writes checkpoints (``run.py``: the skeleton meta-training shares).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..adaptation.adapter import AdapterConfig, OnlineAdapter
from ..adaptation.precision import autocast_dtype
from ..data.datasets import OakdPairs, motorcycle_pan
from ..data.photo_root import OAKD_FOLDER, default_root
from ..data.sample import StereoBatch, StereoSample
from ..training_data.augment import AugmentConfig, augment
from ..training_data.harsh import render_harsh, render_harsh_batch
from ..training_data.photo_stereo import PhotoBank, PhotoStereoConfig, render_photo_batch
from ..training_data.photos import PhotoLibrary
from ..training_data.synthetic import SynthConfig, TextureBank, render_batch
from ..evaluation.metrics import MetricAccumulator
from ..files import atomic_write_bytes
from ..evaluation.runner import RunOptions, madnet_predictor, run_sequence
from ..network.madnet import MADNet
from ..network.weights import InputNormalization, WeightsInfo, load_model, read_weights, \
    save_weights
from .losses import multiscale_l1
from ..options import option
from .run import TrainingRun

LOG = logging.getLogger(__name__)
#: Seeds of validation scenes never overlap training ones (training seeds are below 2**40).
VALIDATION_SEED = 2 ** 40
#: Pool windows are this much larger than the crop (where the scene allows), see above.
WINDOW_MARGIN = 1.3


def check_milestones(milestones: tuple[float, ...]) -> None:
    """Raise ValueError unless ``milestones`` rise within (0, 1)."""
    if any(not 0 < m < 1 for m in milestones) or list(milestones) != sorted(milestones):
        raise ValueError(f"milestones must rise within (0, 1), got {milestones}")


@dataclass(frozen=True)
class TrainConfig:
    """steps: optimiser steps; batch: pairs per rank per step; lr: Adam's initial rate, halved
    at each of ``milestones`` (fractions of ``steps``), reached after a linear ``warmup``
    (steps, 0: none) at the start of every run or resume; clip: gradient norm clipping;
    validate_every, checkpoint_every: in steps; validation_pairs: held-out synthetic pairs.
    amp: "auto", "bf16" or "off", as the adapter's ``amp`` (``autocast_dtype``: auto is bf16
    on CUDA and on CPUs with native bf16), except that where auto would mean fp16 (a GPU
    without bf16) training stays in float32: it has no loss scaling.
    crop: train on random HEIGHT x WIDTH windows of the rendered scenes (None: whole scenes);
    reuse, pool: see the module docstring (reuse 1: every pair is fresh).
    photo_ratio: share of each batch from the photo generator (0: procedural world only);
    photos: the photo library's root ("" for the default cache, "builtin" for the
    scikit-image photos only); photo: the photo generator's settings (its size is set from
    the window). augment: the augmentation (``NO_AUGMENTATION`` to switch it off).
    loss_max_disparity: ground truth above it is left out of the loss and the validation.
    time_limit: stop (validating, checkpointing and exporting as at the last step) after
    this many minutes of training (0: run all ``steps``).
    ema: decay of an exponential moving average of the weights, updated after every step;
    what is validated, kept as best and exported is then the average (0: the weights
    themselves). The average is not in the checkpoint: a resume starts it again from the
    resumed weights. keep_validated: also write every validated model (the average where
    ``ema``) to ``OUT/validated/step_NNNNNN.safetensors`` (fp16), so that a run can be
    chosen from afterwards on more data than the validation holds."""

    steps: int = option(100_000, "Optimiser steps.")
    batch: int = option(4, "Pairs per rank per step.")
    lr: float = option(1e-4, "Adam's initial learning rate.")
    milestones: tuple[float, ...] = (0.6, 0.8, 0.9)
    warmup: int = option(500, "Steps of linear learning-rate warm-up at each start or "
                         "resume.")
    time_limit: float = option(
        0.0, "Stop after this many minutes (validate, checkpoint and export as at the last "
        "step); 0: run all --steps.")
    clip: float = option(1.0, "Gradient norm clipping.")
    synth: SynthConfig = field(default_factory=SynthConfig)
    validate_every: int = option(1000, "Validate every this many steps.")
    checkpoint_every: int = option(1000, "Checkpoint every this many steps.")
    validation_pairs: int = option(16, "Held-out synthetic validation pairs.")
    amp: str = option("auto", "auto: bf16 autocast on CUDA and on CPUs with native bf16 "
                      "(AVX512-BF16/AMX), as the adapter's amp; bf16: always; off.",
                      choices=("auto", "bf16", "off"))
    crop: tuple[int, int] | None = None
    reuse: int = option(1, "Use each rendered scene about this many times (render "
                        "batch/reuse new scenes per step into a pool); for CPU runs.")
    pool: int = option(256, "Scenes kept for --reuse.")
    channels_last: bool = option(False, "NHWC memory layout for the convolutions.")
    seed: int = option(0, "Seed of the rendered data and the initial weights.")
    photo_ratio: float = option(0.5, "Share of each batch made from single real photographs "
                                "(0: procedural world only).")
    harsh_ratio: float = option(
        0.0, "Share of each batch from the harsh scene kinds (grey chessboards at near range, "
        "repetitive and textureless walls, near clutter; training_data/harsh.py).")
    photos: str = option("", "Photo library root (empty: the cache that `stereo-adapt photos "
                         "fetch` fills; 'builtin': scikit-image's photos only).")
    photo: PhotoStereoConfig = field(default_factory=PhotoStereoConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss_max_disparity: float = option(192.0, "Ground truth above this is left out of the loss "
                                       "and the validation.")
    ema: float = option(0.0, "Validate, keep and export an exponential moving average of the "
                        "weights with this decay (e.g. 0.998); 0: the weights themselves.")
    keep_validated: bool = option(False, "Also write every validated model to "
                                  "OUT/validated/step_NNNNNN.safetensors.")

    @property
    def output_size(self) -> tuple[int, int]:
        """The size of the training pairs."""
        return self.crop or (self.synth.height, self.synth.width)

    @property
    def window_size(self) -> tuple[int, int]:
        """The size of the windows cut from the rendered scenes, before augmentation."""
        if self.crop is None:
            return self.synth.height, self.synth.width
        return (min(self.synth.height, math.ceil(self.crop[0] * WINDOW_MARGIN)),
                min(self.synth.width, math.ceil(self.crop[1] * WINDOW_MARGIN)))

    def validate(self) -> None:
        if self.steps < 1 or self.batch < 1:
            raise ValueError("steps and batch must be >= 1")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        check_milestones(self.milestones)
        if self.validate_every < 1 or self.checkpoint_every < 1:
            raise ValueError("validate_every and checkpoint_every must be >= 1")
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"amp must be auto, bf16 or off, got {self.amp!r}")
        if self.reuse < 1 or self.pool < self.batch:
            raise ValueError("need reuse >= 1 and pool >= batch")
        if self.crop is not None and not (16 <= self.crop[0] <= self.synth.height
                                           and 16 <= self.crop[1] <= self.synth.width):
            raise ValueError(f"crop {self.crop} must fit in the rendered "
                             f"{self.synth.height} x {self.synth.width} scenes")
        if self.time_limit < 0:
            raise ValueError(f"time_limit must be >= 0 minutes, got {self.time_limit}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not 0 <= self.photo_ratio <= 1:
            raise ValueError(f"photo_ratio must be in [0, 1], got {self.photo_ratio}")
        if not 0 <= self.harsh_ratio <= 1 - self.photo_ratio:
            raise ValueError(f"harsh_ratio must be in [0, 1 - photo_ratio], got "
                             f"{self.harsh_ratio} with photo_ratio {self.photo_ratio}")
        if self.loss_max_disparity <= 0:
            raise ValueError("loss_max_disparity must be > 0")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        self.synth.validate()
        self.photo.validate()
        self.augment.validate()


def open_photos(root: str, split: str) -> PhotoBank:
    """The photographs of ``split`` from the library at ``root`` ("" for the default cache,
    "builtin" for the scikit-image photos)."""
    library = PhotoLibrary.builtin() if root == "builtin" else PhotoLibrary.open(root or None)
    return PhotoBank(library, split)


class ScenePool:
    """The last ``capacity`` rendered scenes; ``draw`` returns random same-window crops."""

    def __init__(self, capacity: int, crop: tuple[int, int] | None, seed: int):
        self.scenes: deque[StereoBatch] = deque(maxlen=capacity)
        self.crop = crop
        self.random = random.Random(seed)

    def add(self, batch: StereoBatch) -> None:
        for i in range(batch.left.shape[0]):
            self.scenes.append(StereoBatch(*(t[i:i + 1] for t in (
                batch.left, batch.right, batch.disparity, batch.visible))))

    def draw(self, count: int) -> StereoBatch:
        picks = [self.random.randrange(len(self.scenes)) for _ in range(count)]
        parts = [self._crop(self.scenes[i]) for i in picks]
        return StereoBatch(*(torch.cat(t) for t in zip(*(
            (p.left, p.right, p.disparity, p.visible) for p in parts))))

    def _crop(self, scene: StereoBatch) -> StereoBatch:
        if self.crop is None:
            return scene
        height, width = scene.left.shape[-2:]
        top = self.random.randrange(height - self.crop[0] + 1)
        left = self.random.randrange(width - self.crop[1] + 1)
        window = (..., slice(top, top + self.crop[0]), slice(left, left + self.crop[1]))
        return StereoBatch(scene.left[window], scene.right[window], scene.disparity[window],
                           scene.visible[window])


def _learning_rate(config: TrainConfig, step: int, start: int = 0) -> float:
    """The step schedule, after a linear warm-up over ``warmup`` steps from ``start`` (the
    first step of this process: a fresh or resumed Adam's first updates are its largest)."""
    warm = min(1.0, (step - start + 1) / config.warmup) if config.warmup else 1.0
    return warm * config.lr * 0.5 ** sum(step >= m * config.steps for m in config.milestones)


#: What picks the best validation: held-out photo-generated pairs where they are validated
#: (real image statistics, exact ground truth, and never the real test data), else the
#: held-out procedural scenes.
BEST_KEYS = ("photo_EPE", "synthetic_EPE")
#: What no kept checkpoint may worsen by more than ``WORSENING_LIMIT`` (relative) against
#: the weights the run started from (``OUT/baseline.json``): every kind of scene validated,
#: so that a gain on one kind is never paid for by another (campaign 3 improved the photo
#: pairs while a real near-range grey chessboard got worse, unseen by its validation).
GUARDED_KEYS = ("synthetic_EPE", "photo_EPE", "motorcycle_D1", "near_D1", "grey_board_D1",
                "repetitive_D1", "low_texture_D1")
WORSENING_LIMIT = 0.05
#: The harsh scene kinds validated (training_data/harsh.py), by record prefix: near range
#: (to 40 % of the width), a grey chessboard at 50-100 px, repetitive walls, textureless walls.
HARSH_VALIDATION = {"near": "near_poses", "grey_board": "board_poses",
                    "repetitive": "repetitive_pan", "low_texture": "textureless"}
HARSH_VALIDATION_FRAMES = 8


def worsened(record: dict, baseline: dict) -> str | None:
    """Which guarded value of a validation ``record`` is worse than the ``baseline``'s by more
    than ``WORSENING_LIMIT`` (relative), said in words; None when none is."""
    for key in GUARDED_KEYS:
        if key in record and key in baseline and \
                record[key] > baseline[key] * (1 + WORSENING_LIMIT):
            return (f"{key} {record[key]:.3f} is worse than the starting weights' "
                    f"{baseline[key]:.3f} by more than {WORSENING_LIMIT:.0%}")
    return None


def _best_so_far(out: Path) -> float:
    """The best (lowest) selection score already in ``out/best.safetensors`` (inf: none)."""
    try:
        return float(read_weights(out / "best.safetensors")[1].extra["selection_score"])
    except (OSError, ValueError, KeyError):
        return math.inf


def _keep_if_best(out: Path, model: MADNet, normalization: InputNormalization,
                  config: TrainConfig, record: dict, best: float, baseline: dict) -> float:
    """Write ``out/best.safetensors`` (fp16) when this validation's selection score
    (``BEST_KEYS``) is the lowest so far and no guarded set is worse than at the start
    (``worsened``); a run that diverges for a while keeps its best."""
    key = next(k for k in BEST_KEYS if k in record)
    if not record[key] < best:
        return best
    refusal = worsened(record, baseline)
    if refusal is not None:
        LOG.info("step %d not kept as the best: %s", record["step"], refusal)
        return best
    save_weights(out / "best.safetensors", model.state_dict(), _validated_info(
        normalization, config, record, f"best validation ({key}) at step {record['step']}",
        selection=key, selection_score=str(record[key])), dtype=torch.float16)
    return record[key]


def _baseline(out: Path, model: MADNet, normalization: InputNormalization,
              config: TrainConfig, bank: TextureBank, device: torch.device,
              photos: PhotoBank | None, oakd: Sequence[StereoSample] | None) -> dict:
    """The validation of the weights the run starts from (``--weights``, before any resume),
    kept in ``out/baseline.json`` so that a resumed run judges against the same start."""
    path = out / "baseline.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        pass
    record = validate(model, normalization, config, bank, device, photos, oakd)
    atomic_write_bytes(path, json.dumps(record, indent=1).encode())
    return record


def _keep_validated(out: Path, model: MADNet, normalization: InputNormalization,
                    config: TrainConfig, record: dict) -> None:
    """Write the validated model as ``out/validated/step_NNNNNN.safetensors`` (fp16), with
    its validation in the metadata."""
    (out / "validated").mkdir(exist_ok=True)
    save_weights(out / "validated" / f"step_{record['step']:06d}.safetensors",
                 model.state_dict(), _validated_info(normalization, config, record,
                                                     f"step {record['step']}"),
                 dtype=torch.float16)


def _validated_info(normalization: InputNormalization, config: TrainConfig, record: dict,
                    which: str, **extra: str) -> WeightsInfo:
    """The metadata of a validated model: provenance (``which`` names it), the run's
    configuration, ``extra`` and the validation ``record``."""
    return WeightsInfo(
        normalization=normalization,
        trained_on=f"procedural world and stereo from single photographs (photo ratio "
                   f"{config.photo_ratio}), {which}",
        description="stereo-adapt train", extra={
            "config": json.dumps(asdict(config)), **extra,
            **{k: str(v) for k, v in record.items()}})


def _out_of_time(config: TrainConfig, began: float, device: torch.device, world: int) -> bool:
    """Whether ``time_limit`` minutes have passed since ``began`` (rank 0's clock decides for
    every rank, so that they stop at the same step)."""
    if not config.time_limit:
        return False
    over = torch.tensor([time.monotonic() - began > 60 * config.time_limit], device=device)
    if world > 1:
        dist.broadcast(over, src=0)
    return bool(over.item())


#: SGBM's search range for the OAK-D reference (the rig's 2-90 px, as the node's default).
OAKD_SEARCH_RANGE = 128
#: The held-out photo-generated pairs: the validation scenes' size, disparities up to a fifth
#: of the width (the Motorcycle pair spans 0.08 of its width, the OAK-D pairs 0.14).
VALIDATION_PHOTO_FRACTION = (0.02, 0.2)


def validate(model: MADNet, normalization: InputNormalization, config: TrainConfig,
             bank: TextureBank, device: torch.device, photos: PhotoBank | None = None,
             oakd: Sequence[StereoSample] | None = None) -> dict:
    """EPE / D1 on held-out synthetic scenes, held-out photo-generated pairs (from the
    held-out photographs, when ``photos`` is given) and the real Motorcycle pair, and on the
    real OAK-D pairs (``oakd``, no ground truth) the agreement with SGBM's left-right
    consistent pixels and the photometric error (``evaluation/reference.py``); all without
    adaptation."""
    model.eval()
    synthetic = MetricAccumulator(config.synth.max_disparity)
    photo = MetricAccumulator(config.loss_max_disparity)
    photo_config = PhotoStereoConfig(height=config.synth.height, width=config.synth.width,
                                     max_disparity_fraction=VALIDATION_PHOTO_FRACTION)
    with torch.inference_mode():
        for index in range(config.validation_pairs):
            batches = [(synthetic, render_batch(1, config.synth, seed=VALIDATION_SEED + index,
                                                bank=bank, device=device))]
            if photos is not None:
                batches.append((photo, render_photo_batch(1, photos, photo_config,
                                                          seed=VALIDATION_SEED + index,
                                                          device=device)))
            for metrics, batch in batches:
                output = model(normalization.apply(batch.left), normalization.apply(batch.right))
                metrics.add(output.disparity[0, 0].float().cpu().numpy(),
                            batch.disparity[0, 0].cpu().numpy())
    # The whole real pair (one 'pan' frame as wide as the image). The adapter keeps the
    # training layout (changing it would re-stride the parameters under DDP).
    layout = next(p for p in model.parameters() if p.dim() == 4).is_contiguous(
        memory_format=torch.channels_last)
    adapter = OnlineAdapter(model, WeightsInfo(normalization=normalization),
                            AdapterConfig(adaptation_mode="none", channels_last=layout), device)
    real = run_sequence(motorcycle_pan(1, crop_width=741), madnet_predictor(adapter), "none",
                        RunOptions(progress=False))["summary"]
    unlabelled = run_sequence(oakd, madnet_predictor(adapter), "none", RunOptions(
        progress=False, reference_range=OAKD_SEARCH_RANGE))["summary"] if oakd else {}
    harsh = {}
    for prefix, name in HARSH_VALIDATION.items():
        frames = [sample for sample, _ in render_harsh(name, HARSH_VALIDATION_FRAMES,
                                                       seed=VALIDATION_SEED)]
        scores = run_sequence(frames, madnet_predictor(adapter), "none",
                              RunOptions(progress=False))["summary"]
        harsh.update({f"{prefix}_D1": scores["D1_all"], f"{prefix}_EPE": scores["EPE"]})
    model.train()
    summary = synthetic.summary()
    record = {"synthetic_EPE": summary["EPE"], "synthetic_D1": summary["D1_all"],
              "motorcycle_EPE": real["EPE"], "motorcycle_D1": real["D1_all"]}
    if photos is not None:
        summary = photo.summary()
        record.update(photo_EPE=summary["EPE"], photo_D1=summary["D1_all"])
    record.update(harsh)
    if unlabelled:
        record.update(oakd_agree_D1=unlabelled["agree_D1"],
                      oakd_agree_EPE=unlabelled["agree_EPE"],
                      oakd_photo_error=unlabelled["photo_error"])
    return record


def open_oakd(root: str) -> Sequence[StereoSample] | None:
    """The OAK-D pairs of the photo library at ``root`` ("" for the default cache), or None
    where the library does not hold them (the builtin one never does)."""
    if root == "builtin":
        return None
    try:
        return OakdPairs(Path(root or default_root()) / OAKD_FOLDER)
    except (OSError, ValueError) as error:
        LOG.warning("no OAK-D pairs for validation (%s)", error)
        return None


class TrainingData:
    """The batches of one rank: procedural and photo-generated pairs in the configured ratio,
    through the pools (``reuse``) and the augmentation, ``batch`` pairs of ``output_size``."""

    def __init__(self, config: TrainConfig, bank: TextureBank, photos: PhotoBank | None,
                 rank: int, world: int, device: torch.device):
        self.config, self.bank, self.photos = config, bank, photos
        self.rank, self.world, self.device = rank, world, device
        window = config.window_size
        self.photo_config = replace(config.photo, height=window[0], width=window[1])
        crop = window if config.crop is not None else None
        self.pools = {name: ScenePool(config.pool, crop,
                                      seed=config.seed * 1000 + 3 * rank + i)
                      for i, name in enumerate(("synthetic", "photo", "harsh"))}
        self.owed = {name: 0.0 for name in self.pools}
        self.harsh_bank: TextureBank | None = None
        self.generator = torch.Generator().manual_seed(config.seed * 1000 + rank + 7)

    def counts(self, step: int) -> dict[str, int]:
        """Pairs of each source at ``step``: ``photo_ratio`` and ``harsh_ratio`` of the
        pairs, the fractions carried from step to step."""
        total = self.config.batch

        def share(ratio: float) -> int:
            return math.floor((step + 1) * total * ratio) - math.floor(step * total * ratio)
        photo, harsh = share(self.config.photo_ratio), share(self.config.harsh_ratio)
        return {"synthetic": total - photo - harsh, "photo": photo, "harsh": harsh}

    def _render(self, name: str, count: int, seed: int) -> StereoBatch:
        if name == "photo":
            assert self.photos is not None, "photo pairs need a photo library"
            return render_photo_batch(count, self.photos, self.photo_config, seed=seed,
                                      device=self.device)
        if name == "harsh":
            height, width = self.config.window_size
            if self.harsh_bank is None:  # the harsh renderers work on the CPU
                self.harsh_bank = TextureBank()
            return render_harsh_batch(count, height, width, seed=seed, bank=self.harsh_bank,
                                      device=self.device)
        return render_batch(count, self.config.synth, seed=seed, bank=self.bank,
                            device=self.device)

    def batch(self, step: int) -> StereoBatch:
        config = self.config
        seed = config.seed * 2 ** 32 + step * self.world + self.rank
        parts = []
        for name, count in self.counts(step).items():
            if count == 0:
                continue
            if config.reuse == 1 and config.crop is None:
                parts.append(self._render(name, count, seed))
                continue
            pool = self.pools[name]
            # Fill the pool with a whole batch at the start (or after --resume).
            self.owed[name] += count / config.reuse
            fresh = math.floor(self.owed[name]) if len(pool.scenes) >= config.batch \
                else config.batch
            self.owed[name] = max(0.0, self.owed[name] - fresh)
            if fresh:
                pool.add(self._render(name, fresh, seed))
            parts.append(pool.draw(count))
        batch = StereoBatch(*(torch.cat(t) for t in zip(*(
            (p.left, p.right, p.disparity, p.visible) for p in parts))))
        return augment(batch, config.augment, self.generator, config.output_size)


@torch.no_grad()
def _update_average(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * model, parameters and float buffers."""
    for kept, current in zip(average.state_dict().values(), model.state_dict().values()):
        if kept.is_floating_point():
            kept.lerp_(current, 1.0 - decay)
        else:
            kept.copy_(current)


def train(config: TrainConfig, out: Path, resume: bool = False, weights: str = "random",
          device_name: str = "auto") -> dict:
    """Train; returns the last validation record. Writes ``out/checkpoint.safetensors``,
    ``out/madnet_synthetic.safetensors`` (fp16, network only, the last step),
    ``out/best.safetensors`` (fp16, the best validation so far, ``BEST_KEYS``) and
    ``out/scalars.jsonl``."""
    config.validate()
    with TrainingRun(out, "train", device_name=device_name) as run:
        rank, world, device = run.rank, run.world, run.device
        torch.manual_seed(config.seed)  # every rank starts from the same weights
        model, info, _ = load_model(weights, device, seed=config.seed)
        normalization = info.normalization
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        bank = TextureBank(device)
        heldout_photos = open_photos(config.photos, "heldout") if config.photo_ratio > 0 else None
        oakd = open_oakd(config.photos) if run.writes else None
        baseline = _baseline(out, model, normalization, config, bank, device, heldout_photos,
                             oakd) if run.writes else {}
        start = run.resume({"": model}, optimizer) if resume else 0
        trained = DistributedDataParallel(model) if world > 1 else model
        train_photos = open_photos(config.photos, "train") if config.photo_ratio > 0 else None
        data = TrainingData(config, bank, train_photos, rank, world, device)
        amp_dtype = autocast_dtype(config.amp, device)
        if amp_dtype == torch.float16:
            amp_dtype = None
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        if config.channels_last:
            model.to(memory_format=memory_format)  # type: ignore[call-overload]  # torch's stubs
        # What is validated and exported: the weights, or their moving average.
        average = copy.deepcopy(model) if config.ema else model
        record: dict = {}
        tick, pairs, window = time.perf_counter(), 0, []
        model.train()
        bar = run.progress(start, config.steps)
        began, done = time.monotonic(), start
        best = _best_so_far(out)
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(config, step, start)
            batch = data.batch(step)
            left, right = (normalization.apply(view).contiguous(memory_format=memory_format)
                           for view in (batch.left, batch.right))
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                output = trained(left, right)
            loss, per_level = multiscale_l1(output, batch.disparity, config.loss_max_disparity)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            if torch.isfinite(norm):
                optimizer.step()
                if config.ema:
                    _update_average(average, model, config.ema)
            else:
                LOG.warning("step %d: non-finite gradient, skipped", step)
            pairs += config.batch * world
            window.append(loss.detach())
            done = step + 1
            last = done == config.steps or _out_of_time(config, began, device, world)
            if run.writes and (done % config.validate_every == 0 or last):
                elapsed = time.perf_counter() - tick
                record = {"step": done, "train_loss": float(torch.stack(window).mean()),
                          "lr": _learning_rate(config, step, start),
                          "pairs_per_s": round(pairs / elapsed, 2),
                          **{f"L1_level{k}": float(v) for k, v in per_level.items()},
                          **validate(average, normalization, config, bank, device,
                                     heldout_photos, oakd)}
                run.log(record)
                best = _keep_if_best(out, average, normalization, config, record, best, baseline)
                if config.keep_validated:
                    _keep_validated(out, average, normalization, config, record)
                bar.set_postfix(loss=f"{record['train_loss']:.2f}",
                                EPE=f"{record['synthetic_EPE']:.2f}")
                tick, pairs, window = time.perf_counter(), 0, []
            if done % config.checkpoint_every == 0 or last:
                run.checkpoint({"": model}, optimizer, done, config,
                               WeightsInfo(trained_on="synthetic (stereo-adapt train)"))
            if last:
                break
        run.export("madnet_synthetic.safetensors", average.state_dict(),
                   _validated_info(normalization, config, record, f"{done} steps"))
        if world > 1:
            # Every rank reports a digest of its weights, so a run can prove they stayed in sync.
            digest = float(sum(p.detach().double().sum() for p in model.parameters()))
            (out / f"rank{rank}.digest").write_text(repr(digest))
    return record
