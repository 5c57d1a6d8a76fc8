"""What every training loop does around its steps, on one device or under ``torchrun``.

The four loops (``train``: supervised.py, ``meta-train``: meta.py, ``adapt``: offline.py,
``proxy-confidence train``: proxy_confidence.py) run their own steps inside ``with
TrainingRun(...) as run:``, which holds the rest: this process's rank and device (the process
group initialised when there are several ranks), the progress bar, the records file (one JSON
record per validation or epoch: ``OUT/scalars.jsonl``, offline ``epochs.jsonl``), the
checkpoint (every module's weights and Adam's moments in one safetensors file, for
``--resume``) and the exported fp16 weights; leaving the ``with`` closes the records and the
process group. Rank 0 writes every file.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from types import TracebackType

import torch
import torch.distributed as dist
from tqdm import tqdm

from ..network.weights import WeightsInfo, read_weights, save_weights

LOG = logging.getLogger(__name__)


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
                                          **{k: v.to(param.device) for k, v in moments.items()
                                             if v is not None}}
    return int(info.extra.get("step", 0))


class TrainingRun:
    """One run writing to ``out`` (created): ``out/checkpoint.safetensors``, the records
    file and the weights given to ``export``; a context manager (``with TrainingRun(...) as
    run:``) whose exit closes the records file and, with several ranks, waits for every rank
    and leaves the process group.

    name: the progress bar's label (the command: ``train``, ``meta-train``); unit: what one
        step is called in the bar (``step``, ``meta-step``).
    records: the records file's name in ``out`` (None: none); append: add to the file where
        it exists (False: start it again).

    Attributes:
        rank, world, device: this process's rank, the number of ranks and its device
            (``setup_distributed``).
        writes: whether this process writes the files, validates and logs (rank 0).
    """

    def __init__(self, out: Path, name: str, unit: str = "step", device_name: str = "auto",
                 records: str | None = "scalars.jsonl", append: bool = True):
        self.rank, self.world, self.device = setup_distributed(device_name)
        self.writes = self.rank == 0
        self.out, self.name, self.unit = out, name, unit
        self.checkpoint_path = out / "checkpoint.safetensors"
        out.mkdir(parents=True, exist_ok=True)
        self._records = open(out / records, "a" if append else "w") \
            if self.writes and records else None

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._records is not None:
            self._records.close()
        if self.world > 1:
            if kind is None:  # after an error the other ranks may never reach the barrier
                dist.barrier()
            dist.destroy_process_group()

    def resume(self, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer
               ) -> int:
        """Restore the checkpoint into ``modules`` and ``optimizer`` where there is one;
        returns the step to continue from (0: none)."""
        if not self.checkpoint_path.exists():
            return 0
        return load_checkpoint(self.checkpoint_path, modules, optimizer)

    def progress(self, start: int, steps: int, desc: str | None = None) -> tqdm:
        """The steps ``start`` .. ``steps - 1``, with a progress bar on rank 0 (stderr),
        labelled ``desc`` (default: the run's name)."""
        return tqdm(range(start, steps), desc=desc or self.name, unit=self.unit,
                    disable=not self.writes, initial=start, total=steps, file=sys.stderr,
                    dynamic_ncols=True)

    def log(self, record: dict) -> None:
        """Append ``record`` to the records file and the log (rank 0)."""
        if not self.writes:
            return
        if self._records is not None:
            self._records.write(json.dumps(record) + "\n")
            self._records.flush()
        LOG.info("%s: %s", self.name, record)

    def checkpoint(self, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
                   step: int, config, info: WeightsInfo) -> None:
        """``save_checkpoint`` to ``out/checkpoint.safetensors`` (rank 0)."""
        if self.writes:
            save_checkpoint(self.checkpoint_path, modules, optimizer, step, config, info)

    def export(self, name: str, tensors: dict[str, torch.Tensor], info: WeightsInfo) -> None:
        """Write ``tensors`` as ``out/name`` in fp16 (rank 0)."""
        if self.writes:
            save_weights(self.out / name, tensors, info, dtype=torch.float16)
