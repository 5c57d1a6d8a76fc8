"""The network as an adapter runs it: the fast-path settings (memory layout, compilation,
autocast precision, settled on a CPU by timed trials; fp16's loss scaler) and which of its
parameters an adaptation step trains."""

from __future__ import annotations

import torch

from ..network.madnet import BLOCKS, MADNet, MADNetOutput
from ..network.weights import InputNormalization
from .config import AdapterConfig
from .losses import photometric_error
from .precision import measure_cpu_autocast, measure_float32_blocks, native_cpu_bf16


class ModelRuntime:
    """Owns how ``model`` runs on ``device`` under ``config``'s fast-path switches (``amp``,
    ``channels_last``, ``cudnn_benchmark``, ``compile``) with autocast to ``amp_dtype``
    (None: float32)."""

    def __init__(self, model: MADNet, device: torch.device, config: AdapterConfig,
                 amp_dtype: torch.dtype | None) -> None:
        self.model = model
        self.device = device
        self.params = dict(model.named_parameters())
        self.block_names = model.block_parameter_names()
        self.apply_fast_path(config, amp_dtype)

    def apply_fast_path(self, config: AdapterConfig, amp_dtype: torch.dtype | None) -> None:
        """Apply the fast-path switches of ``config`` (again after a change: the precision
        trials start over)."""
        self.memory_format = torch.channels_last if config.channels_last \
            else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)  # type: ignore[call-overload]  # torch's stubs
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = config.cudnn_benchmark
        # Compiled for inference only: in adaptation steps the set of parameters requiring
        # gradients changes with the MAD block, which would force recompilations.
        self.inference_forward = torch.compile(self.model) if config.compile else self.model
        # The photometric error (warp, SSIM, L1: dozens of elementwise passes over full-size
        # images) is compiled for every step, so a MAD step's loss and its backward are fused.
        self.error_fn = torch.compile(photometric_error, dynamic=False) if config.compile \
            else photometric_error
        self.amp_dtype = amp_dtype
        # CPU auto: bf16 only if a timed trial at the first frame's size says it is faster.
        self._amp_trial_pending = (config.amp == "auto" and self.device.type == "cpu"
                                   and native_cpu_bf16())
        # Under bf16 on a CPU, the blocks adaptation steps train in float32: (size, blocks)
        # settled by a timed trial at the first adaptation step (measure_float32_blocks).
        self._float32_blocks: tuple[tuple[int, int], tuple[int, ...]] | None = None
        self.scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    def autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype,
                              enabled=self.amp_dtype is not None)

    def network_input(self, left: torch.Tensor, right: torch.Tensor,
                      normalization: InputNormalization) -> tuple[torch.Tensor, torch.Tensor]:
        """The pair (1 x 3 x h x w in [0, 1]) normalised for the network, in its memory
        layout."""
        return (normalization.apply(left).contiguous(memory_format=self.memory_format),
                normalization.apply(right).contiguous(memory_format=self.memory_format))

    def train_forward(self, left: torch.Tensor, right: torch.Tensor,
                      normalization: InputNormalization, block: int | None,
                      float32_blocks: tuple[int, ...]) -> MADNetOutput:
        """The forward pass of a step on ``block`` (None: a full step), recorded for the
        backward pass; ``float32_blocks`` (those of them trained) run in float32."""
        if block is not None:
            float32_blocks = tuple(b for b in float32_blocks if b == block)
        with self.autocast():
            return self.model(*self.network_input(left, right, normalization),
                              detach_between_blocks=block is not None,
                              float32_blocks=float32_blocks)

    def settle_precision(self, left: torch.Tensor, right: torch.Tensor,
                         normalization: InputNormalization) -> None:
        """On the first frame, settle CPU ``amp="auto"`` by timing both precisions on the
        pair (``measure_cpu_autocast``); nothing otherwise."""
        if not self._amp_trial_pending:
            return
        self.model.eval()
        inputs = self.network_input(left, right, normalization)

        def forward(dtype: torch.dtype | None) -> None:
            with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16,
                                                        enabled=dtype is not None):
                self.inference_forward(*inputs)
        self.amp_dtype = measure_cpu_autocast(forward, (left.shape[-2], left.shape[-1]))
        self._amp_trial_pending = False

    def training_float32_blocks(self, left: torch.Tensor, right: torch.Tensor,
                                normalization: InputNormalization) -> tuple[int, ...]:
        """The blocks adaptation steps run in float32: under bf16 autocast on a CPU, those a
        timed trial at the first adaptation step's size found faster that way
        (``measure_float32_blocks``; a camera's size is fixed); none at other sizes, whose
        answer may differ (on small images every block was faster in float32), nor otherwise.
        """
        if self.amp_dtype != torch.bfloat16 or self.device.type != "cpu":
            return ()
        size = (left.shape[-2], left.shape[-1])
        if self._float32_blocks is None:
            inputs = self.network_input(left, right, normalization)

            def train_step(block: int, float32: bool) -> None:
                self.train_only(block)
                with self.autocast():
                    output = self.model(*inputs, detach_between_blocks=True,
                                        float32_blocks=(block,) if float32 else ())
                output.levels[block].float().mean().backward()
                self.model.zero_grad(set_to_none=True)
            self._float32_blocks = size, measure_float32_blocks(train_step, BLOCKS, size)
            self.model.requires_grad_(True)
        measured_size, blocks = self._float32_blocks
        return blocks if size == measured_size else ()

    def train_only(self, block: int | None) -> list[torch.nn.Parameter]:
        """Make ``block``'s parameters (all of them for None) the only ones that require
        gradients and put the model in training mode; returns those parameters."""
        names = self.block_names[block] if block is not None else list(self.params)
        trained_params = [self.params[name] for name in names]
        # Only the trained parameters require gradients, so autograd records nothing for the
        # rest of the network: a MAD step back-propagates through one block only.
        self.model.requires_grad_(False)
        for param in trained_params:
            param.requires_grad_(True)
        self.model.train()
        return trained_params

    def trained(self, block: int | None) -> dict[str, torch.Tensor]:
        """The parameters a step on ``block`` (None: a full step) trains, by name."""
        names = self.block_names[block] if block is not None else list(self.params)
        return {name: self.params[name] for name in names}
