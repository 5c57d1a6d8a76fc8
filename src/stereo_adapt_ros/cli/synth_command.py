"""``stereo-adapt synth``: write procedural synthetic stereo data to disk, to look at or train
on."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..adaptation.precision import select_device
from ..data.bag import STORAGES, write_stereo_bag
from ..data.io import write_image_rgb, write_kitti_disparity
from ..data.stereo_camera import StereoCamera
from ..training_data.harsh import HARSH_SEQUENCES, render_harsh
from ..training_data.photo_stereo import PhotoBank, PhotoStereoConfig, render_photo_batch, \
    render_photo_sequence
from ..training_data.photos import PhotoLibrary
from ..training_data.synthetic import SynthConfig, TextureBank, render_batch, render_sequence, \
    to_samples
from .arguments import image_size

LOG = logging.getLogger("stereo_adapt_ros.synth")
#: The synthetic world's baseline is one unit; call it 10 cm for the camera_info of the bag.
BASELINE_M = 0.1


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "synth", help="render synthetic stereo pairs (KITTI layout) and a sequence (rosbag2)",
        description="Writes OUT/image_2, image_3 (left/right, *_10.png), disp_occ_0 (exact "
                    "disparity of every pixel) and disp_noc_0 (only pixels the right camera "
                    "sees), KITTI 16-bit PNGs; with --sequence N also OUT/sequence/ in the same "
                    "layout and OUT/sequence_bag, a rosbag2 the node can replay.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=20, help="independent scenes")
    parser.add_argument("--sequence", type=int, default=0, metavar="N",
                        help="also render an N-frame moving-camera sequence")
    parser.add_argument("--size", type=image_size, default=(320, 960), help="HEIGHTxWIDTH")
    parser.add_argument("--min-disparity", type=float, default=SynthConfig.min_disparity)
    parser.add_argument("--max-disparity", type=float, default=SynthConfig.max_disparity)
    parser.add_argument("--source", choices=("procedural", "photo"), default="procedural",
                        help="procedural: the ray-cast world; photo: stereo made from single "
                             "real photographs of the photo library (--photos, --split)")
    parser.add_argument("--photos", default="",
                        help="photo library root (default: the cache of `stereo-adapt photos "
                             "fetch`; 'builtin': scikit-image's photos)")
    parser.add_argument("--split", choices=("train", "heldout"), default="heldout",
                        help="which photographs --source photo uses")
    parser.add_argument("--max-disparity-fraction", type=float, default=0.2,
                        help="--source photo: the largest disparity of a pair is drawn up to "
                             "this times the width")
    parser.add_argument("--no-photometric", action="store_true",
                        help="identical cameras (no per-view gain, noise, blur, highlights)")
    parser.add_argument("--harsh", action="append", default=[], metavar="NAME",
                        choices=(*HARSH_SEQUENCES, "all"),
                        help="write the harsh development sequence NAME (repeatable; all: "
                             "every one) to OUT/NAME, --sequence frames each (default 24), "
                             "instead of the above: "
                             + "; ".join(f"{k}: {v[0]}" for k, v in HARSH_SEQUENCES.items()))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bag-storage", choices=sorted(STORAGES), default="mcap")
    parser.set_defaults(run=run)


def _write_kitti(root: Path, samples, start: int) -> None:
    for folder in ("image_2", "image_3", "disp_occ_0", "disp_noc_0"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for offset, (sample, visible) in enumerate(samples):
        name = f"{start + offset:06d}_10.png"
        write_image_rgb(root / "image_2" / name, sample.left)
        write_image_rgb(root / "image_3" / name, sample.right)
        write_kitti_disparity(root / "disp_occ_0" / name, sample.disparity)
        write_kitti_disparity(root / "disp_noc_0" / name,
                              np.where(visible, sample.disparity, np.nan))


def _write_harsh(args: argparse.Namespace) -> int:
    names = list(HARSH_SEQUENCES) if "all" in args.harsh else list(dict.fromkeys(args.harsh))
    frames = args.sequence or 24
    for name in tqdm(names, desc="harsh sequences", unit="sequence"):
        _write_kitti(args.out / name, render_harsh(name, frames, seed=args.seed), 0)
    LOG.info("wrote %d harsh sequences of %d frames to %s", len(names), frames, args.out)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.harsh:
        return _write_harsh(args)
    height, width = args.size
    config = SynthConfig(height=height, width=width, min_disparity=args.min_disparity,
                         max_disparity=args.max_disparity, photometric=not args.no_photometric)
    if args.count < 0 or args.sequence < 0:
        raise ValueError("--count and --sequence must be >= 0")
    device = select_device(args.device)
    if args.source == "photo":
        library = PhotoLibrary.builtin() if args.photos == "builtin" else \
            PhotoLibrary.open(args.photos or None)
        photos = PhotoBank(library, args.split)
        photo_config = PhotoStereoConfig(height=height, width=width, max_disparity_fraction=(
            0.02, args.max_disparity_fraction))
        photo_config.validate()

        def pair(seed: int):
            return render_photo_batch(1, photos, photo_config, seed=seed, device=device)

        def sequence():
            return render_photo_sequence(args.sequence, photos, photo_config, seed=args.seed,
                                         device=device)
    else:
        config.validate()
        bank = TextureBank(device)

        def pair(seed: int):
            return render_batch(1, config, seed=seed, bank=bank, device=device)

        def sequence():
            return render_sequence(args.sequence, config, seed=args.seed, bank=bank,
                                   device=device)
    for index in tqdm(range(args.count), desc="scenes", unit="pair"):
        batch = pair(args.seed * 1_000_003 + index)
        _write_kitti(args.out, to_samples(batch, [f"{index:06d}"]), index)
    if args.sequence:
        frames = sequence()
        samples = [to_samples(frame, [f"sequence_{i:06d}"], [i / 10])[0]
                   for i, frame in enumerate(frames)]
        _write_kitti(args.out / "sequence", samples, 0)
        camera = StereoCamera(config.focal, config.focal, (width - 1) / 2, (height - 1) / 2,
                              BASELINE_M)
        write_stereo_bag(args.out / "sequence_bag", [s for s, _ in samples], camera,
                         storage=args.bag_storage)
    LOG.info("wrote %d pairs%s to %s", args.count,
             f" and a {args.sequence}-frame sequence" if args.sequence else "", args.out)
    return 0
