"""``stereo-adapt meta-train``: L2A meta-learning of initial weights and of the confidence
network for weighted adaptation, on synthetic sequences.

Several GPUs or nodes: ``torchrun --nproc_per_node N -m stereo_adapt_ros meta-train ...``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..training_data.synthetic import SynthConfig
from ..training.meta import ORDERS, MetaConfig, meta_train
from .arguments import image_size, positive_int


def register(commands: argparse._SubParsersAction) -> None:
    defaults = MetaConfig()
    parser = commands.add_parser(
        "meta-train", help="L2A: meta-learn initial weights (+ confidence network) for fast "
                           "online adaptation",
        description="Each task is a synthetic moving-camera sequence of k+1 frames: k "
                    "self-supervised inner steps (weighted by the confidence network), then "
                    "the supervised L1 of each adapted network on the next frame. Writes "
                    "OUT/checkpoint.safetensors, OUT/madnet_l2a.safetensors (network + "
                    "confidence network, fp16) and OUT/scalars.jsonl.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--weights", default="synthetic",
                        help="initial weights (L2A starts from supervised ones)")
    parser.add_argument("--steps", type=positive_int, default=defaults.steps)
    parser.add_argument("--tasks", type=positive_int, default=defaults.tasks,
                        help="sequences per meta-step (per rank)")
    parser.add_argument("--inner-steps", type=positive_int, default=defaults.inner_steps,
                        help="k, adaptation steps per task")
    parser.add_argument("--alpha", type=float, default=defaults.alpha, help="inner rate")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="outer Adam rate")
    parser.add_argument("--confidence-lr", type=float, default=None,
                        help="outer Adam rate of the confidence network (default: --lr)")
    parser.add_argument("--order", choices=ORDERS, default=defaults.order,
                        help="second: exact, through the inner updates; first: first-order")
    parser.add_argument("--no-confidence", action="store_true",
                        help="plain L2A, without the confidence network (WAd)")
    parser.add_argument("--size", type=image_size,
                        default=(defaults.synth.height, defaults.synth.width))
    parser.add_argument("--max-disparity", type=float, default=defaults.synth.max_disparity)
    parser.add_argument("--validate-every", type=positive_int, default=defaults.validate_every)
    parser.add_argument("--checkpoint-every", type=positive_int,
                        default=defaults.checkpoint_every)
    parser.add_argument("--validation-tasks", type=positive_int,
                        default=defaults.validation_tasks)
    parser.add_argument("--resume", action="store_true", help="continue OUT/checkpoint")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    height, width = args.size
    config = MetaConfig(steps=args.steps, tasks=args.tasks, inner_steps=args.inner_steps,
                        alpha=args.alpha, lr=args.lr,
                        confidence_lr=args.confidence_lr, order=args.order,
                        weighted=not args.no_confidence,
                        synth=SynthConfig(height=height, width=width,
                                          max_disparity=args.max_disparity),
                        validate_every=args.validate_every,
                        checkpoint_every=args.checkpoint_every,
                        validation_tasks=args.validation_tasks, seed=args.seed)
    record = meta_train(config, args.out, weights=args.weights, resume=args.resume,
                        device_name=args.device)
    if record:
        print(json.dumps(record))
    return 0
