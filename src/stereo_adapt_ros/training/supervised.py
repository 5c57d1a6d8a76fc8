"""Supervised pretraining of MADNet on the procedural synthetic world, on one or many devices.

Loss: multi-scale L1. Every prediction (levels 6..3 and the refined level 2, which is the final
output) is upsampled to the input resolution, in input pixels, and compared with the exact
ground truth: mean absolute error over the pixels whose disparity is within ``max_disparity``.
Weights 1, 1/2, 1/4, 1/8, 1/16 from the final output to level 6. (The paper's 0.005 ... 0.32
were for sums over each level's own pixels, PWC-Net style; with means at one resolution, weights
falling with coarseness play the same role: the coarse levels guide, the fine ones decide.)

Data: every step renders fresh scenes. With ``reuse`` > 1 (for CPU runs, where rendering costs
as much as a training step) each step renders only ``batch / reuse`` scenes into a pool of the
last ``pool`` scenes and trains on random ``crop``-sized windows of pool scenes: the same left,
right and ground-truth window, so the supervision stays exact (right-image content that falls
outside the window is simply out of view, as at any image border).

Scale-out: run under ``torchrun``; each rank renders its own data (seeded by step and rank),
gradients are averaged by DistributedDataParallel (NCCL on CUDA, gloo on CPU), and rank 0
validates and writes checkpoints.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import math
import random
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..adaptation.adapter import AdapterConfig, OnlineAdapter
from ..adaptation.losses import at_least_float32
from ..data.datasets import motorcycle_pan
from ..data.synthetic import StereoBatch, SynthConfig, TextureBank, render_batch
from ..evaluation.metrics import MetricAccumulator
from ..evaluation.runner import RunOptions, madnet_predictor, run_sequence
from ..network.madnet import BLOCKS, MADNet
from ..network.weights import InputNormalization, WeightsInfo, load_model, read_weights, \
    save_weights

LOG = logging.getLogger(__name__)
LEVEL_WEIGHTS = {2: 1.0, 3: 0.5, 4: 0.25, 5: 0.125, 6: 0.0625}
#: Seeds of validation scenes never overlap training ones (training seeds are below 2**40).
VALIDATION_SEED = 2 ** 40


@dataclass(frozen=True)
class TrainConfig:
    """steps: optimiser steps; batch: pairs per rank per step; lr: Adam's initial rate, halved
    at each of ``milestones`` (fractions of ``steps``); clip: gradient norm clipping;
    validate_every, checkpoint_every: in steps; validation_pairs: held-out synthetic pairs.
    amp: "auto" (bf16 autocast on CUDA, float32 on CPU), "bf16" (also on CPU) or "off".
    crop: train on random HEIGHT x WIDTH windows of the rendered scenes (None: whole scenes);
    reuse, pool: see the module docstring (reuse 1: every pair is fresh)."""

    steps: int = 100_000
    batch: int = 4
    lr: float = 1e-4
    milestones: tuple[float, ...] = (0.6, 0.8, 0.9)
    clip: float = 1.0
    synth: SynthConfig = field(default_factory=SynthConfig)
    validate_every: int = 1000
    checkpoint_every: int = 1000
    validation_pairs: int = 16
    amp: str = "auto"
    crop: tuple[int, int] | None = None
    reuse: int = 1
    pool: int = 256
    channels_last: bool = False
    seed: int = 0

    def validate(self) -> None:
        if self.steps < 1 or self.batch < 1:
            raise ValueError("steps and batch must be >= 1")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
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
        self.synth.validate()


def multiscale_l1(output, disparity: torch.Tensor, max_disparity: float
                  ) -> tuple[torch.Tensor, dict[int, float]]:
    """The weighted multi-scale L1 (see the module docstring). disparity: B x 1 x H x W."""
    valid = torch.isfinite(disparity) & (disparity > 0) & (disparity <= max_disparity)
    count = valid.sum().clamp_min(1)
    target = torch.where(valid, disparity, torch.zeros_like(disparity))
    total = torch.zeros((), device=disparity.device)
    per_level = {}
    for level in BLOCKS:
        error = ((at_least_float32(output.upsampled(level)) - target).abs() * valid).sum() / count
        total = total + LEVEL_WEIGHTS[level] * error
        per_level[level] = error.detach()
    return total, per_level


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


def _learning_rate(config: TrainConfig, step: int) -> float:
    return config.lr * 0.5 ** sum(step >= m * config.steps for m in config.milestones)


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def setup_distributed(device_name: str = "auto") -> tuple[int, int, torch.device]:
    """(rank, world size, device) for this process: torchrun's rank and local GPU (``auto``),
    with the process group initialised (NCCL on CUDA, gloo on CPU) when there are several."""
    rank, world, local_rank = _distributed()
    if device_name == "auto":
        device_name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return rank, world, device


def save_checkpoint(path: Path, modules: dict[str, torch.nn.Module],
                    optimizer: torch.optim.Optimizer, step: int, config, info: WeightsInfo
                    ) -> None:
    """The modules' weights and Adam's moments in one safetensors file (no pickle), atomically.

    modules: key prefix -> module (``""`` for the network, ``"confidence."`` for L2A's
    confidence network). config: the run's dataclass, stored as JSON with ``step``.
    """
    tensors, names = {}, {}
    for prefix, module in modules.items():
        tensors.update({prefix + k: v for k, v in module.state_dict().items()})
        names.update({id(p): prefix + n for n, p in module.named_parameters()})
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    tensors[f"optimizer.{key}.{names[id(param)]}"] = state[key]
    adam_step = next((float(s["step"]) for s in optimizer.state.values() if "step" in s), 0.0)
    save_weights(path, tensors, replace(
        info, description=f"checkpoint at step {step}",
        extra={"step": str(step), "adam_step": str(adam_step),
               "config": json.dumps(asdict(config))}))


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module],
                    optimizer: torch.optim.Optimizer) -> int:
    """Restore what ``save_checkpoint`` wrote; returns the step to continue from."""
    tensors, info = read_weights(path)
    prefixes = tuple(prefix for prefix in modules if prefix)
    adam_step = float(info.extra.get("adam_step", 0))
    for prefix, module in modules.items():
        if prefix:
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        else:
            state = {k: v for k, v in tensors.items()
                     if not k.startswith(("optimizer.", *prefixes))}
        module.load_state_dict(state)
        for name, param in module.named_parameters():
            moments = {key: tensors.get(f"optimizer.{key}.{prefix}{name}")
                       for key in ("exp_avg", "exp_avg_sq")}
            if all(m is not None for m in moments.values()):
                optimizer.state[param] = {"step": torch.tensor(adam_step),
                                          **{k: v.to(param.device) for k, v in moments.items()}}
    return int(info.extra.get("step", 0))


def validate(model: MADNet, normalization: InputNormalization, config: TrainConfig,
             bank: TextureBank, device: torch.device) -> dict:
    """EPE / D1 on held-out synthetic scenes and on the real Motorcycle pair (no adaptation)."""
    model.eval()
    synthetic = MetricAccumulator(config.synth.max_disparity)
    with torch.inference_mode():
        for index in range(config.validation_pairs):
            batch = render_batch(1, config.synth, seed=VALIDATION_SEED + index, bank=bank,
                                 device=device)
            output = model(normalization.apply(batch.left), normalization.apply(batch.right))
            synthetic.add(output.disparity[0, 0].float().cpu().numpy(),
                          batch.disparity[0, 0].cpu().numpy())
    # The whole real pair (one 'pan' frame as wide as the image). The adapter keeps the
    # training layout (changing it would re-stride the parameters under DDP).
    layout = next(p for p in model.parameters() if p.dim() == 4).is_contiguous(
        memory_format=torch.channels_last)
    adapter = OnlineAdapter(model, WeightsInfo(normalization=normalization),
                            AdapterConfig(mode="none", channels_last=layout), device)
    real = run_sequence(motorcycle_pan(1, crop_width=741), madnet_predictor(adapter), "none",
                        RunOptions(progress=False))["summary"]
    model.train()
    summary = synthetic.summary()
    return {"synthetic_EPE": summary["EPE"], "synthetic_D1": summary["D1_all"],
            "motorcycle_EPE": real["EPE"], "motorcycle_D1": real["D1_all"]}


def train(config: TrainConfig, out: Path, resume: bool = False, weights: str = "random",
          device_name: str = "auto") -> dict:
    """Train; returns the last validation record. Writes ``out/checkpoint.safetensors``,
    ``out/madnet_synthetic.safetensors`` (fp16, network only) and ``out/scalars.jsonl``."""
    config.validate()
    rank, world, device = setup_distributed(device_name)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)  # every rank starts from the same weights
    model, info, _ = load_model(weights, device, seed=config.seed)
    normalization = info.normalization
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    checkpoint = out / "checkpoint.safetensors"
    start = load_checkpoint(checkpoint, {"": model}, optimizer) \
        if resume and checkpoint.exists() else 0
    trained = DistributedDataParallel(model) if world > 1 else model
    bank = TextureBank(device)
    amp = config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    if config.channels_last:
        model.to(memory_format=memory_format)
    pool = ScenePool(config.pool, config.crop, seed=config.seed * 1000 + rank)
    owed = 0.0  # scenes to render so far, fractional (batch / reuse per step)
    scalars = open(out / "scalars.jsonl", "a") if rank == 0 else None
    record: dict = {}
    tick, pairs, window = time.perf_counter(), 0, []
    model.train()
    bar = tqdm(range(start, config.steps), desc="train", unit="step", disable=rank != 0,
               initial=start, total=config.steps, file=sys.stderr, dynamic_ncols=True)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step)
        seed = config.seed * 2 ** 32 + step * world + rank
        if config.reuse == 1 and config.crop is None:
            batch = render_batch(config.batch, config.synth, seed=seed, bank=bank, device=device)
        else:
            # Fill the pool with a whole batch at the start (or after --resume).
            owed += config.batch / config.reuse
            count = math.floor(owed) if len(pool.scenes) >= config.batch else config.batch
            owed = max(0.0, owed - count)
            if count:
                pool.add(render_batch(count, config.synth, seed=seed, bank=bank,
                                      device=device))
            batch = pool.draw(config.batch)
        left, right = (normalization.apply(view).contiguous(memory_format=memory_format)
                       for view in (batch.left, batch.right))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            output = trained(left, right)
        loss, per_level = multiscale_l1(output, batch.disparity, config.synth.max_disparity)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        if torch.isfinite(norm):
            optimizer.step()
        else:
            LOG.warning("step %d: non-finite gradient, skipped", step)
        pairs += config.batch * world
        window.append(loss.detach())
        done = step + 1
        if rank == 0 and (done % config.validate_every == 0 or done == config.steps):
            elapsed = time.perf_counter() - tick
            record = {"step": done, "train_loss": float(torch.stack(window).mean()),
                      "lr": _learning_rate(config, step),
                      "pairs_per_s": round(pairs / elapsed, 2),
                      **{f"L1_level{k}": float(v) for k, v in per_level.items()},
                      **validate(model, normalization, config, bank, device)}
            scalars.write(json.dumps(record) + "\n")
            scalars.flush()
            LOG.info("step %d: %s", done, record)
            bar.set_postfix(loss=f"{record['train_loss']:.2f}",
                            EPE=f"{record['synthetic_EPE']:.2f}")
            tick, pairs, window = time.perf_counter(), 0, []
        if rank == 0 and (done % config.checkpoint_every == 0 or done == config.steps):
            save_checkpoint(checkpoint, {"": model}, optimizer, done, config,
                            WeightsInfo(trained_on="synthetic (stereo-adapt train)"))
    if rank == 0:
        final = WeightsInfo(normalization=normalization,
                            trained_on=f"synthetic procedural world, {config.steps} steps",
                            description="stereo-adapt train", extra={
                                "config": json.dumps(asdict(config)),
                                **{k: str(v) for k, v in record.items()}})
        save_weights(out / "madnet_synthetic.safetensors", model.state_dict(), final,
                     dtype=torch.float16)
        scalars.close()
    if world > 1:
        # Every rank reports a digest of its weights, so a run can prove they stayed in sync.
        digest = float(sum(p.detach().double().sum() for p in model.parameters()))
        (out / f"rank{rank}.digest").write_text(repr(digest))
        dist.barrier()
        dist.destroy_process_group()
    return record
