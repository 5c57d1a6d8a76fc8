"""L2A: meta-learning MADNet's initial weights, and a confidence network, for fast online
adaptation (Tonioni et al., CVPR 2019).

A task is a short synthetic sequence of k + 1 frames seen by a moving camera. From the weights
theta_0, k inner steps adapt as the robot would, without labels:
``theta_{i+1} = theta_i - alpha * grad L_u(theta_i, frame_i)``, with ``L_u`` the photometric
error weighted per pixel by the confidence network (WAd; plain mean without it). The outer
objective is supervised: the multi-scale L1 of ``theta_i`` on ``frame_i`` for i = 1..k, i.e.
each adapted network is judged on the frame after the ones it adapted on. Its gradient, averaged
over a batch of tasks, updates theta_0 (and the confidence network) with Adam.

``order="second"`` differentiates through the inner updates exactly (``torch.func.
functional_call`` with the inner gradients kept in the graph). ``order="first"`` treats the inner
gradients as constants with respect to the network's weights (first-order MAML), but keeps
their dependence on the confidence network, which is its only path to a gradient.
The confidence network is never trained by the inner (self-supervised) loss: the inner
gradients are taken with respect to the network's weights only.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.func import functional_call

from ..adaptation.losses import photometric_loss
from ..data.sample import StereoBatch
from ..network.confidence_net import PREFIX, ConfidenceNetwork
from ..network.madnet import MADNet
from ..network.weights import InputNormalization, WeightsInfo, load_model
from ..options import check_options, option
from ..training_data.synthetic import SynthConfig, TextureBank, render_sequence
from .losses import multiscale_l1
from .run import TrainingRun

LOG = logging.getLogger(__name__)
ORDERS = ("second", "first")
#: Held-out task seeds (training tasks use seeds below 2**40, as stereo-adapt train does).
VALIDATION_SEED = 2 ** 40 + 7


@dataclass(frozen=True)
class MetaConfig:
    """The meta-training's settings; synth: the rendered sequences' world (its size and largest
    disparity from ``--size`` and ``--max-disparity``)."""

    steps: int = option(2000, "Meta-steps.")
    tasks: int = option(4, "Sequences per meta-step (per rank).")
    inner_steps: int = option(1, "k, self-supervised adaptation steps per task.")
    alpha: float = option(1e-4, "Inner learning rate (plain gradient descent).")
    lr: float = option(1e-5, "Outer Adam learning rate.")
    confidence_lr: float = option(
        0.0, "Outer Adam rate of the confidence network, which starts untrained and so may "
        "move faster; 0: --lr.")
    order: str = option("second", "second: exact, through the inner updates; first: "
                        "first-order (the inner gradients as constants).", choices=ORDERS)
    weighted: bool = option(True, "Train and use the confidence network (WAd); off: plain "
                            "L2A.")
    synth: SynthConfig = field(default_factory=lambda: SynthConfig(height=192, width=384,
                                                                   max_disparity=80))
    validate_every: int = option(100, "Validate every this many meta-steps.")
    checkpoint_every: int = option(100, "Checkpoint every this many meta-steps.")
    validation_tasks: int = option(4, "Held-out sequences of the validation.")
    seed: int = option(0, "Seed of the rendered sequences and the initial weights.")

    def validate(self) -> None:
        if self.steps < 1 or self.tasks < 1 or self.inner_steps < 1:
            raise ValueError("steps, tasks and inner_steps must be >= 1")
        check_options(self)
        if not (0 < self.alpha < 1 and 0 < self.lr < 1) or not 0 <= self.confidence_lr < 1:
            raise ValueError("alpha and lr must be in (0, 1), confidence_lr in [0, 1)")
        if self.validate_every < 1 or self.checkpoint_every < 1 or self.validation_tasks < 1:
            raise ValueError("validate_every, checkpoint_every and validation_tasks must be "
                             ">= 1")
        self.synth.validate()


def render_task(config: MetaConfig, seed: int, bank: TextureBank, device: torch.device
                ) -> list[StereoBatch]:
    """k + 1 consecutive frames of one moving-camera sequence."""
    return render_sequence(config.inner_steps + 1, config.synth, seed=seed, bank=bank,
                           device=device)


def task_losses(model: MADNet, params: dict[str, torch.Tensor],
                confidence: ConfidenceNetwork | None, frames: list[StereoBatch],
                normalization: InputNormalization, alpha: float, order: str | None,
                max_disparity: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapt from ``params`` through the frames; returns (outer loss, the unadapted weights'
    supervised loss on the last frame, for reference).

    order: ``second``, ``first``, or None (evaluation: the inner gradients are constants).
    """
    outer = torch.zeros((), device=frames[0].left.device)
    current = params
    k = len(frames) - 1
    # First order with a confidence network: the inner gradient is taken at a detached copy of
    # the weights, so it is a constant w.r.t. them but still a function of the confidence
    # network (through the loss weighting), which is that network's only path to a gradient.
    split = order == "first" and confidence is not None
    for index, frame in enumerate(frames):
        inputs = (normalization.apply(frame.left), normalization.apply(frame.right))
        output = None
        if index > 0 or not split:
            output = functional_call(model, current, inputs)
        if index > 0:
            supervised, _ = multiscale_l1(output, frame.disparity, max_disparity)
            outer = outer + supervised / k
        if index == k:
            break
        names = list(current)
        if split:
            at = {n: current[n].detach().requires_grad_(True) for n in names}
            inner, _ = photometric_loss(frame.left, frame.right,
                                        functional_call(model, at, inputs).disparity,
                                        weights=confidence)
            grads = torch.autograd.grad(inner, [at[n] for n in names], create_graph=True)
        else:
            assert output is not None  # computed above whenever not split
            inner, _ = photometric_loss(frame.left, frame.right, output.disparity,
                                        weights=confidence)
            grads = torch.autograd.grad(inner, [current[n] for n in names],
                                        create_graph=order == "second")
        current = {n: current[n] - alpha * g for n, g in zip(names, grads)}
    with torch.no_grad():
        last = frames[-1]
        unadapted = functional_call(model, params, (normalization.apply(last.left),
                                                    normalization.apply(last.right)))
        reference, _ = multiscale_l1(unadapted, last.disparity, max_disparity)
    return outer, reference


def meta_gradients(model: MADNet, confidence: ConfidenceNetwork | None,
                   tasks: list[list[StereoBatch]], normalization: InputNormalization,
                   config: MetaConfig) -> tuple[float, float]:
    """Accumulate the meta-gradient of the mean outer loss over ``tasks`` into ``.grad`` of the
    network (and confidence network) parameters. Returns (mean outer, mean unadapted loss)."""
    params: dict[str, torch.Tensor] = dict(model.named_parameters())
    outer_sum, reference_sum = 0.0, 0.0
    for frames in tasks:
        outer, reference = task_losses(model, params, confidence, frames, normalization,
                                       config.alpha, config.order, config.synth.max_disparity)
        (outer / len(tasks)).backward()
        outer_sum += float(outer.detach())
        reference_sum += float(reference)
    return outer_sum / len(tasks), reference_sum / len(tasks)


def _modules(model: MADNet, confidence: ConfidenceNetwork | None
             ) -> dict[str, torch.nn.Module]:
    """Key prefix -> module, as stored in checkpoints and in madnet_l2a.safetensors."""
    return {"": model} if confidence is None else {"": model, PREFIX: confidence}


def validate(model, confidence, normalization, config, bank, device) -> dict:
    """Mean supervised loss on held-out tasks before and after the k inner steps."""
    tasks = [render_task(config, VALIDATION_SEED + i, bank, device)
             for i in range(config.validation_tasks)]
    params = {n: p.detach().requires_grad_(True) for n, p in model.named_parameters()}
    adapted, unadapted = 0.0, 0.0
    for frames in tasks:
        outer, reference = task_losses(model, params, confidence, frames, normalization,
                                       config.alpha, None, config.synth.max_disparity)
        adapted += float(outer) / len(tasks)
        unadapted += float(reference) / len(tasks)
    return {"validation_adapted_L1": adapted, "validation_unadapted_L1": unadapted}


def meta_train(config: MetaConfig, out: Path, weights: str = "synthetic", resume: bool = False,
               device_name: str = "auto") -> dict:
    """Meta-train; writes OUT/checkpoint.safetensors, OUT/madnet_l2a.safetensors (fp16, network
    and confidence network) and OUT/scalars.jsonl. Returns the last validation record."""
    config.validate()
    with TrainingRun(out, "meta-train", unit="meta-step", device_name=device_name) as run:
        rank, world, device = run.rank, run.world, run.device
        torch.manual_seed(config.seed)
        model, info, _ = load_model(weights, device, seed=config.seed)
        normalization = info.normalization
        confidence = ConfidenceNetwork().to(device) if config.weighted else None
        modules = _modules(model, confidence)
        parameters = [p for module in modules.values() for p in module.parameters()]
        groups = [{"params": list(model.parameters()), "lr": config.lr}]
        if confidence is not None:
            groups.append({"params": list(confidence.parameters()),
                           "lr": config.confidence_lr or config.lr})
        optimizer = torch.optim.Adam(groups)
        start = run.resume(modules, optimizer) if resume else 0
        if world > 1:  # every rank starts from rank 0's weights
            for param in parameters:
                dist.broadcast(param.data, 0)
        bank = TextureBank(device)
        record: dict = {}
        window: list[tuple[float, float]] = []
        tick = time.perf_counter()
        bar = run.progress(start, config.steps)
        for step in bar:
            seeds = [config.seed * 2 ** 32 + (step * world + rank) * config.tasks + t
                     for t in range(config.tasks)]
            tasks = [render_task(config, s, bank, device) for s in seeds]
            optimizer.zero_grad(set_to_none=True)
            window.append(meta_gradients(model, confidence, tasks, normalization, config))
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
            if world > 1:
                for grad in grads:
                    dist.all_reduce(grad)
                    grad /= world
            finite = all(bool(torch.isfinite(g).all()) for g in grads)
            if finite:
                for param, grad in zip(parameters, grads):
                    param.grad = grad
                torch.nn.utils.clip_grad_norm_(parameters, 1.0)
                optimizer.step()
            else:
                LOG.warning("meta-step %d: non-finite meta-gradient, skipped", step)
            done = step + 1
            if run.writes and (done % config.validate_every == 0 or done == config.steps):
                elapsed = time.perf_counter() - tick
                record = {"step": done, "outer_L1": sum(o for o, _ in window) / len(window),
                          "unadapted_L1": sum(r for _, r in window) / len(window),
                          "tasks_per_s": round(len(window) * config.tasks * world / elapsed, 3),
                          **validate(model, confidence, normalization, config, bank, device)}
                run.log(record)
                bar.set_postfix(outer=f"{record['outer_L1']:.2f}")
                window, tick = [], time.perf_counter()
            if done % config.checkpoint_every == 0 or done == config.steps:
                run.checkpoint(modules, optimizer, done, config, WeightsInfo(
                    normalization=normalization, trained_on="L2A meta-training checkpoint"))
        run.export("madnet_l2a.safetensors",
                   {prefix + k: v for prefix, module in modules.items()
                    for k, v in module.state_dict().items()},
                   WeightsInfo(normalization=normalization,
                               trained_on=f"L2A meta-training from {weights}, {config.steps} steps",
                               description="stereo-adapt meta-train" +
                                           (" with confidence network (WAd)" if confidence else ""),
                               extra={"config": json.dumps(asdict(config)),
                                      **{k: str(v) for k, v in record.items()}}))
    return record
