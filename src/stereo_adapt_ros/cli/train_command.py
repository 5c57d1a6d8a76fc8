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
from ..training_data.synthetic import SynthConfig
from ..training.supervised import TrainConfig, check_milestones, train
from .arguments import image_size, positive_int


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
    parser.add_argument("--steps", type=positive_int, default=TrainConfig.steps)
    parser.add_argument("--batch", type=positive_int, default=TrainConfig.batch, help="per rank")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--time-limit", type=float, default=0.0, metavar="MINUTES",
                        help="stop after this many minutes (validate, checkpoint and export as "
                             "at the last step); 0: run all --steps")
    parser.add_argument("--ema", type=float, default=TrainConfig.ema, metavar="DECAY",
                        help="validate, keep and export an exponential moving average of the "
                             "weights with this decay (e.g. 0.998); 0: the weights themselves")
    parser.add_argument("--milestones", type=milestone_list,
                        default=",".join(map(str, TrainConfig.milestones)), metavar="F,F,...",
                        help="halve the learning rate at these fractions of --steps")
    parser.add_argument("--keep-validated", action="store_true",
                        help="also write every validated model to "
                             "OUT/validated/step_NNNNNN.safetensors")
    parser.add_argument("--warmup", type=int, default=TrainConfig.warmup,
                        help="steps of linear learning-rate warm-up at each start or resume")
    parser.add_argument("--size", type=image_size, default=(320, 960), help="HEIGHTxWIDTH")
    parser.add_argument("--max-disparity", type=float, default=SynthConfig.max_disparity)
    parser.add_argument("--validate-every", type=positive_int, default=TrainConfig.validate_every)
    parser.add_argument("--checkpoint-every", type=positive_int,
                        default=TrainConfig.checkpoint_every)
    parser.add_argument("--validation-pairs", type=positive_int,
                        default=TrainConfig.validation_pairs)
    parser.add_argument("--weights", default="random", help="start from these weights")
    parser.add_argument("--resume", action="store_true", help="continue OUT/checkpoint")
    parser.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto",
                        help="auto: bf16 autocast on CUDA and on CPUs with native bf16 "
                             "(AVX512-BF16/AMX), as the adapter's amp; bf16: always; off")
    parser.add_argument("--crop", type=image_size, default=None,
                        help="train on random HEIGHTxWIDTH windows of the --size scenes")
    parser.add_argument("--reuse", type=positive_int, default=TrainConfig.reuse,
                        help="use each rendered scene about this many times (render batch/reuse "
                             "new scenes per step into a pool); for CPU runs")
    parser.add_argument("--pool", type=positive_int, default=TrainConfig.pool,
                        help="scenes kept for --reuse")
    parser.add_argument("--photo-ratio", type=float, default=TrainConfig.photo_ratio,
                        help="share of each batch made from single real photographs "
                             "(0: procedural world only)")
    parser.add_argument("--harsh-ratio", type=float, default=TrainConfig.harsh_ratio,
                        help="share of each batch from the harsh scene kinds (grey chessboards "
                             "at near range, repetitive and textureless walls, near clutter; "
                             "training_data/harsh.py)")
    parser.add_argument("--photo-max-disparity", type=float,
                        default=PhotoStereoConfig.max_disparity_fraction[1], metavar="FRACTION",
                        help="largest disparity of a photo-generated pair, as a fraction of its "
                             "width (drawn per pair from 0.02 up to this)")
    parser.add_argument("--photos", default=TrainConfig.photos,
                        help="photo library root (default: the cache that `stereo-adapt photos "
                             "fetch` fills; 'builtin': scikit-image's photos only)")
    parser.add_argument("--augment", type=augment_overrides, default={},
                        metavar="NAME=VALUE,...",
                        help="change augmentation settings, e.g. occlusion=0,vertical=0.5 "
                             "(fields of AugmentConfig; see training_data/augment.py)")
    parser.add_argument("--no-augment", action="store_true", help="switch augmentation off")
    parser.add_argument("--loss-max-disparity", type=float, default=TrainConfig.max_disparity,
                        help="ground truth above this is left out of the loss")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    height, width = args.size
    config = TrainConfig(steps=args.steps, batch=args.batch, lr=args.lr, warmup=args.warmup,
                         time_limit=args.time_limit, ema=args.ema,
                         milestones=args.milestones, keep_validated=args.keep_validated,
                         synth=SynthConfig(height=height, width=width,
                                           max_disparity=args.max_disparity),
                         validate_every=args.validate_every,
                         checkpoint_every=args.checkpoint_every,
                         validation_pairs=args.validation_pairs, amp=args.amp,
                         crop=args.crop, reuse=args.reuse, pool=args.pool,
                         channels_last=args.channels_last,
                         seed=args.seed, photo_ratio=args.photo_ratio, photos=args.photos,
                         harsh_ratio=args.harsh_ratio,
                         photo=PhotoStereoConfig(max_disparity_fraction=(
                             0.02, args.photo_max_disparity)),
                         augment=replace(NO_AUGMENTATION if args.no_augment else AugmentConfig(),
                                         **args.augment),
                         max_disparity=args.loss_max_disparity)
    record = train(config, args.out, resume=args.resume, weights=args.weights,
                   device_name=args.device)
    if record:
        print(json.dumps(record))
    return 0
