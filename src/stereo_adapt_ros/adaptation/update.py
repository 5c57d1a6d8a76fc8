"""The weight update of an adaptation step: its learning rate and an optimiser step that
never leaves a non-finite loss, gradient or weight in the model."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import AdapterConfig


def learning_rate(config: AdapterConfig, block: int | None, steps_since_reset: int) -> float:
    """The rate of a step on ``block`` (None: a full step): MAD's per-block rates, times the
    warm-up after ``steps_since_reset`` steps since the last start or reset."""
    rate = config.learning_rate if block is None else \
        config.mad_learning_rate * config.mad_block_rate_factor ** (block - 2)
    if config.warmup_steps:
        rate *= min(1.0, (steps_since_reset + 1) / config.warmup_steps)
    return rate


def guarded_update(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                   loss: torch.Tensor, reported_loss: torch.Tensor,
                   params: list[torch.nn.Parameter], device: torch.device
                   ) -> tuple[float, str | None]:
    """Back-propagate ``loss`` and step ``params``; a non-finite loss, gradient or updated
    weight never stays in the model. ``scaler``: fp16's loss scaling, None otherwise.

    The step is taken without waiting for the device; its health (finite loss, gradients
    and weights) is read back together with ``reported_loss`` in the one synchronisation
    of the step, and a bad step is rolled back then. Returns (reported loss, the reason
    the step was undone or None).
    """
    optimizer.zero_grad(set_to_none=True)
    backup = [p.detach().clone() for p in params]
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    grads = [p.grad for p in params if p.grad is not None]
    grads_finite = all_finite(grads) if grads else torch.zeros((), dtype=torch.bool,
                                                                 device=device)
    if scaler is not None:
        # The scaler skips the step itself on overflow (and lowers its scale).
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    health = torch.stack([reported_loss.detach().float(), torch.isfinite(loss.detach()),
                          grads_finite, all_finite(params)]).tolist()
    reported, loss_ok, grads_ok, weights_ok = health
    if loss_ok and grads_ok and weights_ok:
        return reported, None
    with torch.no_grad():
        for param, saved in zip(params, backup):
            param.copy_(saved)
    # Adam's moments took the non-finite gradient in; a skipped fp16 step left them alone.
    if scaler is None or weights_ok == 0:
        for param in params:
            optimizer.state.pop(param, None)
    if not loss_ok:
        return reported, "non-finite loss"
    if not grads:
        return reported, "no gradient"
    return reported, "non-finite gradient" if not grads_ok else \
        "non-finite weights after the update"


def all_finite(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """A 0-d bool tensor on the tensors' device: every element of every tensor is finite."""
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()
