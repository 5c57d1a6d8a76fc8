"""``stereo-adapt train``: supervised pretraining on the procedural synthetic world.

Several GPUs or nodes: ``torchrun --nproc_per_node N -m stereo_adapt_ros train ...``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dataclasses import fields, replace

from ..training_data.augment import NO_AUGMENTATION, AugmentConfig
from ..training_data.photo_stereo import PhotoStereoConfig
from ..training.supervised import TrainConfig, check_milestones, train
from ..options import declared_options
from .arguments import add_option, add_scene_flags, image_size, option_values, scene_config

TRAIN_OPTIONS = declared_options(TrainConfig)


def augment_overrides(text: str) -> dict[str, float]:
    """``name=value[,name=value...]`` for AugmentConfig's fields (``scale=LOW:HIGH``)."""
    known = {f.name for f in fields(AugmentConfig)}
    overrides: dict = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name not in known or not value:
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(known))}")
        try:
            overrides[name] = (tuple(float(v) for v in value.split(":")) if name == "scale"
                               else float(value))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: not a number") from None
        if name == "scale" and len(overrides[name]) != 2:
            raise argparse.ArgumentTypeError(f"{item!r}: scale is LOW:HIGH (log2)")
    return overrides


def milestone_list(text: str) -> tuple[float, ...]:
    """``0.6,0.8,0.9`` as a rising tuple of fractions in (0, 1); ``none`` or empty: a
    constant rate."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of fractions: {text!r}") from None
    try:
        check_milestones(values)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return values


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train", help="supervised pretraining on synthetic data (torchrun for several GPUs)",
        description="Procedural scenes and stereo made from single real photographs "
                    "(--photo-ratio), augmented per view (--augment, --no-augment). "
                    "Multi-scale L1 to the exact synthetic ground truth, Adam with a step "
                    "schedule, bf16 autocast on CUDA, gradient clipping, checkpoints and "
                    "--resume, validation on held-out synthetic scenes and the real Motorcycle "
                    "pair. Writes OUT/checkpoint.safetensors, OUT/madnet_synthetic.safetensors "
                    "and OUT/scalars.jsonl.")
    parser.add_argument("out", type=Path)
    for declared in TRAIN_OPTIONS.values():
        add_option(parser, declared)
    # The settings that are not one number or word: a list, sizes, and the generators' own.
    parser.add_argument("--milestones", type=milestone_list,
                        default=",".join(map(str, TrainConfig.milestones)), metavar="F,F,...",
                        help="halve the learning rate at these fractions of --steps")
    add_scene_flags(parser, TrainConfig().synth)
    parser.add_argument("--crop", type=image_size, default=None,
                        help="train on random HEIGHTxWIDTH windows of the --size scenes")
    parser.add_argument("--photo-max-disparity", type=float,
                        default=PhotoStereoConfig.max_disparity_fraction[1], metavar="FRACTION",
                        help="largest disparity of a photo-generated pair, as a fraction of its "
                             "width (drawn per pair from 0.02 up to this)")
    parser.add_argument("--augment", type=augment_overrides, default={},
                        metavar="NAME=VALUE,...",
                        help="change augmentation settings, e.g. occlusion=0,vertical=0.5 "
                             "(fields of AugmentConfig; see training_data/augment.py)")
    parser.add_argument("--no-augment", action="store_true", help="switch augmentation off")
    parser.add_argument("--weights", default="random", help="start from these weights")
    parser.add_argument("--resume", action="store_true", help="continue OUT/checkpoint")
    parser.add_argument("--device", default="auto")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = TrainConfig(**option_values(args, TRAIN_OPTIONS.values()),
                         milestones=args.milestones, crop=args.crop,
                         synth=scene_config(args, TrainConfig().synth),
                         photo=PhotoStereoConfig(max_disparity_fraction=(
                             0.02, args.photo_max_disparity)),
                         augment=replace(NO_AUGMENTATION if args.no_augment else AugmentConfig(),
                                         **args.augment))
    record = train(config, args.out, resume=args.resume, weights=args.weights,
                   device_name=args.device)
    if record:
        print(json.dumps(record))
    return 0
