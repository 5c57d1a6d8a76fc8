"""``stereo-adapt eval``: run MADNet (online adaptation) or SGBM over a sequence and score it."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from dataclasses import replace
from pathlib import Path

import torch

from ..adaptation.adapter import AdapterConfig, OnlineAdapter
from ..adaptation.config import MODES
from ..adaptation.precision import select_device
from ..data.datasets import open_dataset
from ..evaluation.runner import RunOptions, format_table, madnet_predictor, proxy_predictor, \
    run_sequence, sgbm_predictor
from ..files import atomic_write_bytes
from ..matching.sgbm import SgbmConfig
from ..network.weights import WeightsError, resolve_weights
from ..options import declared_options
from .arguments import add_option, option_values, positive_int

LOG = logging.getLogger("stereo_adapt_ros.eval")
METHODS = ("madnet", "sgbm", "both", "proxy")
ADAPTER_OPTIONS = declared_options(AdapterConfig)


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if not modes or bad:
        raise argparse.ArgumentTypeError(f"modes must be a comma list of {MODES}, got {text!r}")
    return modes


# Where eval uses an adapter option differently from the adapter alone: several modes, one
# run each; the proxy's search range and SGBM variant also serve the SGBM baseline.
_EVAL_USE: dict[str, dict] = {
    "adaptation_mode": dict(type=_modes, choices=None, default=[AdapterConfig.adaptation_mode],
                            help="adaptation mode(s), comma-separated: none, full, mad (each "
                                 "run starts from the same weights; default: %(default)s)"),
    "proxy_max_disparity": dict(help="search range in input pixels of the proxy and of the "
                                     "SGBM baseline, as the node's proxy_max_disparity (never "
                                     "taken from the ground truth: no method sees it; default: "
                                     "%(default)s)"),
    "proxy_sgbm_mode": dict(help="OpenCV SGBM variant of the baseline and of the sgbm proxy "
                                 "(default: %(default)s)"),
}


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval", help="run a sequence online and score it against ground truth",
        description="Run a stereo sequence in order (adaptation carries from frame to frame) "
                    "and report D1_all, EPE, bad-N and density. With no DATA: a pan sequence "
                    "over the real Middlebury Motorcycle pair that ships with scikit-image.")
    parser.add_argument("data", nargs="?", default=None,
                        help="KITTI 2012/2015 or raw drive folder, Middlebury scene(s), a CSV "
                             "list 'left,right[,disparity]', or a rosbag2 (.db3/.mcap)")
    parser.add_argument("--method", choices=METHODS, default="madnet",
                        help="madnet, sgbm (OpenCV, stereo_image_proc's algorithm), both, or "
                             "proxy (score the --proxy-method labels themselves, before and "
                             "after the --proxy-tau confidence threshold)")
    parser.add_argument("--weights", default=None,
                        help="shipped name (synthetic, l2a), a .safetensors file, or 'random'; "
                             "default: synthetic if shipped, else random with a warning")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    for declared in ADAPTER_OPTIONS.values():
        add_option(parser, declared, **_EVAL_USE.get(declared.name, {}))
    parser.add_argument("--steps-per-frame", type=positive_int, default=1, metavar="K",
                        help="adaptation steps per frame: the frame's own and K-1 on recent "
                             "pairs (the node's idle_adaptation, offline)")
    parser.add_argument("--oracle", action="store_true",
                        help="also run each adapting mode with supervised L1 to the frames' own "
                             "ground truth instead of its self-supervised loss (same steps and "
                             "rate): the ceiling of the adaptation signal")
    parser.add_argument("--max-frames", type=positive_int, default=None)
    parser.add_argument("--repeat", type=positive_int, default=1,
                        help="run the sequence N times (watch adaptation converge)")
    parser.add_argument("--max-disparity", type=float, default=None,
                        help="score only ground truth up to this (no method sees it)")
    parser.add_argument("--min-disparity", type=float, default=None,
                        help="score only ground truth from this up: the near objects alone, "
                             "e.g. the chessboard of dev/harsh/board_poses (55-95 px, its "
                             "background 4-12) with 40 (no method sees it)")
    parser.add_argument("--pan-frames", type=positive_int, default=40,
                        help="frames of the embedded pan sequence")
    parser.add_argument("--save", type=Path, default=None, metavar="DIR",
                        help="write KITTI 16-bit and colourised disparity PNGs here")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="write the results as JSON (one run: {summary, frames}; "
                             "several: {runs: [...]})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def default_weights() -> str:
    try:
        resolve_weights("synthetic")
        return "synthetic"
    except WeightsError:
        LOG.warning("no shipped weights found: starting from a random initialisation. "
                    "Its disparities are meaningless until adaptation has run for a long "
                    "time; pass --weights FILE for real results")
        return "random"


def run(args: argparse.Namespace) -> int:
    if args.min_disparity is not None and not (
            0 <= args.min_disparity <= (args.max_disparity or math.inf)):
        raise ValueError(f"--min-disparity must be >= 0 and at most --max-disparity, got "
                         f"{args.min_disparity}")
    samples = open_dataset(args.data, num_frames=args.pan_frames) if args.data is None \
        else open_dataset(args.data)
    LOG.info("%d frames from %s", len(samples), args.data or "the embedded Motorcycle pan")
    options = RunOptions(max_frames=args.max_frames, repeat=args.repeat,
                         max_disparity=args.max_disparity, min_disparity=args.min_disparity,
                         progress=not args.no_progress,
                         reference_range=args.proxy_max_disparity)

    def save_dir(label: str) -> Path | None:
        return None if args.save is None else args.save / label

    results = []
    options_given = option_values(args, ADAPTER_OPTIONS.values())
    modes = options_given.pop("adaptation_mode")
    config = AdapterConfig(**options_given)
    config.validate()
    if args.method in ("madnet", "both"):
        device = select_device(args.device)
        if device.type == "cpu":
            torch.set_num_threads(max(1, os.cpu_count() or 1))
        weights = args.weights or default_weights()
        loss, proxy = config.adaptation_loss, config.proxy_method
        runs = [(mode, False) for mode in modes]
        if args.oracle:
            runs += [(mode, True) for mode in modes if mode != "none"]
        for mode, oracle in runs:
            adapter = OnlineAdapter.from_weights(weights, replace(config, adaptation_mode=mode),
                                                 device)
            label = mode if mode == "none" or loss == "photometric" \
                else f"{mode}+{proxy if loss == 'proxy' else 'photo+' + proxy}"
            if oracle:
                label = f"{mode}+oracle"
            if args.steps_per_frame > 1 and mode != "none":
                label += f" x{args.steps_per_frame}"
            LOG.info("MADNet, mode %s, loss %s, weights %s (%s), device %s", mode,
                     "oracle (ground truth)" if oracle else loss, weights,
                     adapter.info.trained_on, device)
            result = run_sequence(samples, madnet_predictor(adapter, args.steps_per_frame,
                                                            oracle),
                                  label, replace(options, save_dir=save_dir(label)))
            result["summary"]["weights"] = weights
            result["summary"]["loss"] = "none" if mode == "none" else \
                "oracle" if oracle else loss
            result["summary"]["steps_per_frame"] = args.steps_per_frame
            results.append(result)
    if args.method in ("sgbm", "both"):
        sgbm = SgbmConfig.for_max_disparity(config.proxy_max_disparity,
                                            mode=config.proxy_sgbm_mode)
        result = run_sequence(samples, sgbm_predictor(sgbm), "sgbm",
                              replace(options, save_dir=save_dir("sgbm")))
        results.append(result)

    if args.method == "proxy":
        for tau in (None, config.proxy_tau):
            label = f"proxy-{config.proxy_method}" + (
                "" if tau is None else f"-{config.proxy_confidence}>{tau:g}")
            results.append(run_sequence(samples, proxy_predictor(config.proxy_config(), tau),
                                        label, replace(options, save_dir=save_dir(label))))
    print(format_table(results))
    if args.json is not None:
        _write_json(args.json, results[0] if len(results) == 1 else {"runs": results})
    return 0


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(payload, indent=1).encode())
