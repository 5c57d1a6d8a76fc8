"""``stereo-adapt meta-train``: L2A meta-learning of initial weights and of the confidence
network for weighted adaptation, on synthetic sequences.

Several GPUs or nodes: ``torchrun --nproc_per_node N -m stereo_adapt_ros meta-train ...``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..options import declared_options
from ..training.meta import MetaConfig, meta_train
from .arguments import add_option, add_scene_flags, option_values, scene_config

META_OPTIONS = declared_options(MetaConfig)
#: Flags older than their option's name.
FLAGS = {"weighted": ("--confidence",)}


def register(commands: argparse._SubParsersAction) -> None:
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
    for name, declared in META_OPTIONS.items():
        add_option(parser, declared, *FLAGS.get(name, ()))
    add_scene_flags(parser, MetaConfig().synth)
    parser.add_argument("--resume", action="store_true", help="continue OUT/checkpoint")
    parser.add_argument("--device", default="auto")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = MetaConfig(**option_values(args, META_OPTIONS.values()),
                        synth=scene_config(args, MetaConfig().synth))
    record = meta_train(config, args.out, weights=args.weights, resume=args.resume,
                        device_name=args.device)
    if record:
        print(json.dumps(record))
    return 0
