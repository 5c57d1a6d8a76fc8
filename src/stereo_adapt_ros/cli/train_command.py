"""``stereo-adapt train``: supervised pretraining on the procedural synthetic world.

Several GPUs or nodes: ``torchrun --nproc_per_node N -m stereo_adapt_ros train ...``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..data.synthetic import SynthConfig
from ..training.supervised import TrainConfig, train
from .arguments import image_size, positive_int


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train", help="supervised pretraining on synthetic data (torchrun for several GPUs)",
        description="Multi-scale L1 to the exact synthetic ground truth, Adam with a step "
                    "schedule, bf16 autocast on CUDA, gradient clipping, checkpoints and "
                    "--resume, validation on held-out synthetic scenes and the real Motorcycle "
                    "pair. Writes OUT/checkpoint.safetensors, OUT/madnet_synthetic.safetensors "
                    "and OUT/scalars.jsonl.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=positive_int, default=TrainConfig.steps)
    parser.add_argument("--batch", type=positive_int, default=TrainConfig.batch, help="per rank")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--size", type=image_size, default=(320, 960), help="HEIGHTxWIDTH")
    parser.add_argument("--max-disparity", type=float, default=SynthConfig.max_disparity)
    parser.add_argument("--validate-every", type=positive_int, default=TrainConfig.validate_every)
    parser.add_argument("--checkpoint-every", type=positive_int, default=TrainConfig.checkpoint_every)
    parser.add_argument("--validation-pairs", type=positive_int, default=TrainConfig.validation_pairs)
    parser.add_argument("--weights", default="random", help="start from these weights")
    parser.add_argument("--resume", action="store_true", help="continue OUT/checkpoint")
    parser.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto",
                        help="auto: bf16 autocast on CUDA, float32 on CPU; bf16: also on CPU "
                             "(fast on CPUs with AVX512-BF16/AMX)")
    parser.add_argument("--crop", type=image_size, default=None,
                        help="train on random HEIGHTxWIDTH windows of the --size scenes")
    parser.add_argument("--reuse", type=positive_int, default=TrainConfig.reuse,
                        help="use each rendered scene about this many times (render batch/reuse "
                             "new scenes per step into a pool); for CPU runs")
    parser.add_argument("--pool", type=positive_int, default=TrainConfig.pool,
                        help="scenes kept for --reuse")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    height, width = args.size
    config = TrainConfig(steps=args.steps, batch=args.batch, lr=args.lr,
                         synth=SynthConfig(height=height, width=width,
                                           max_disparity=args.max_disparity),
                         validate_every=args.validate_every,
                         checkpoint_every=args.checkpoint_every,
                         validation_pairs=args.validation_pairs, amp=args.amp,
                         crop=args.crop, reuse=args.reuse, pool=args.pool,
                         channels_last=args.channels_last,
                         seed=args.seed)
    record = train(config, args.out, resume=args.resume, weights=args.weights,
                   device_name=args.device)
    if record:
        print(json.dumps(record))
    return 0
