"""``stereo-adapt eval``: run MADNet (online adaptation) or SGBM over a sequence and score it."""

from __future__ import annotations

import argparse
import json
import math
import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..adaptation.adapter import LOSSES, MODES, OPTIMIZERS, AdapterConfig, OnlineAdapter, \
    select_device
from ..adaptation.proxy import CONFIDENCE_MEASURES, PROXY_METHODS
from ..adaptation.sampler import SAMPLING_STRATEGIES
from ..data.datasets import open_dataset
from ..evaluation.runner import RunOptions, format_table, madnet_predictor, proxy_predictor, \
    run_sequence, sgbm_predictor
from ..evaluation.sgbm import SGBM_MODES, SgbmConfig
from ..network.weights import WeightsError, resolve_weights
from .arguments import positive_int

LOG = logging.getLogger("stereo_adapt_ros.eval")
METHODS = ("madnet", "sgbm", "both", "proxy")


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if not modes or bad:
        raise argparse.ArgumentTypeError(f"modes must be a comma list of {MODES}, got {text!r}")
    return modes


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
                             "proxy (score the --proxy labels themselves, before and after "
                             "the --tau confidence threshold)")
    parser.add_argument("--mode", type=_modes, default=["mad"],
                        help="adaptation mode(s), comma-separated: none, full, mad "
                             "(each run starts from the same weights)")
    parser.add_argument("--weights", default=None,
                        help="shipped name (synthetic, l2a), a .safetensors file, or 'random'; "
                             "default: synthetic if shipped, else random with a warning")
    parser.add_argument("--lr", type=float, default=AdapterConfig.learning_rate)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=AdapterConfig.optimizer)
    parser.add_argument("--momentum", type=float, default=AdapterConfig.momentum,
                        help="SGD momentum (0: plain gradient descent, as L2A's inner loop)")
    parser.add_argument("--mad-sampling", choices=SAMPLING_STRATEGIES,
                        default=AdapterConfig.mad_sampling)
    parser.add_argument("--mad-block", type=int, default=AdapterConfig.mad_fixed_block,
                        help="the block for --mad-sampling fixed")
    parser.add_argument("--mad-loss-scale", type=float, default=AdapterConfig.mad_loss_scale,
                        help="MAD steps on blocks 3-6: photometric loss on images resized by "
                             "this factor (1: full resolution; 0.25: output resolution, cheaper)")
    parser.add_argument("--adapt-every", type=positive_int, default=1,
                        help="adapt on one frame in N")
    parser.add_argument("--reset-threshold", type=float, default=None,
                        help="reset to the initial weights when the loss exceeds this")
    parser.add_argument("--smoothness", type=float, default=0.0,
                        help="weight of the edge-aware smoothness term")
    parser.add_argument("--loss", choices=LOSSES, default=AdapterConfig.loss,
                        help="adaptation loss: photometric, proxy (confidence-guided regression "
                             "to --proxy labels; MAD++ in mad mode) or both")
    parser.add_argument("--proxy", choices=PROXY_METHODS, default=AdapterConfig.proxy_method,
                        help="proxy-label matcher: OpenCV SGBM, AD or census block matching")
    parser.add_argument("--proxy-confidence", choices=CONFIDENCE_MEASURES,
                        default=AdapterConfig.proxy_confidence,
                        help="lr (left-right consistency), peak (uniqueness) or combined")
    parser.add_argument("--tau", type=float, default=AdapterConfig.proxy_tau,
                        help="regress only pixels whose proxy confidence exceeds this")
    parser.add_argument("--proxy-weight", type=float, default=AdapterConfig.proxy_weight,
                        help="weight of the proxy term with --loss both")
    parser.add_argument("--proxy-max-disparity", type=positive_int, default=None,
                        help="proxy search range in input pixels (default: --max-disparity "
                             "or the data's, as for SGBM)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--amp", choices=("auto", "off", "fp16", "bf16"), default="auto",
                        help="mixed precision (auto: bf16/fp16 on CUDA; on CPU bf16 where it is "
                             "native (AVX512-BF16, AMX), 1.7x faster, else off)")
    parser.add_argument("--no-channels-last", action="store_true",
                        help="plain NCHW layout instead of the faster channels_last")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the inference forward (worth it on CUDA)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="resize factor for the network input; disparities are rescaled "
                             "to the original resolution")
    parser.add_argument("--max-frames", type=positive_int, default=None)
    parser.add_argument("--repeat", type=positive_int, default=1,
                        help="run the sequence N times (watch adaptation converge)")
    parser.add_argument("--max-disparity", type=float, default=None,
                        help="ignore ground truth above this (also SGBM's search range)")
    parser.add_argument("--pan-frames", type=positive_int, default=40,
                        help="frames of the embedded pan sequence")
    parser.add_argument("--sgbm-mode", choices=tuple(SGBM_MODES), default="sgbm",
                        help="OpenCV SGBM variant, of the baseline and of the sgbm proxy")
    parser.add_argument("--seed", type=int, default=0)
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
    samples = open_dataset(args.data, num_frames=args.pan_frames) if args.data is None \
        else open_dataset(args.data)
    LOG.info("%d frames from %s", len(samples), args.data or "the embedded Motorcycle pan")
    options = RunOptions(max_frames=args.max_frames, repeat=args.repeat,
                         max_disparity=args.max_disparity, progress=not args.no_progress)

    def save_dir(label: str) -> Path | None:
        return None if args.save is None else args.save / label

    results = []
    proxy_range = args.proxy_max_disparity or math.ceil(args.max_disparity or
                                                        _sgbm_range(samples))
    if args.method in ("madnet", "both"):
        device = select_device(args.device)
        if device.type == "cpu":
            torch.set_num_threads(max(1, os.cpu_count() or 1))
        weights = args.weights or default_weights()
        config = AdapterConfig(learning_rate=args.lr, optimizer=args.optimizer,
                               momentum=args.momentum,
                               mad_sampling=args.mad_sampling, mad_fixed_block=args.mad_block,
                               mad_loss_scale=args.mad_loss_scale,
                               adapt_every_n=args.adapt_every,
                               reset_loss_threshold=args.reset_threshold,
                               smoothness_weight=args.smoothness, input_scale=args.scale,
                               amp=args.amp, channels_last=not args.no_channels_last,
                               compile=args.compile, seed=args.seed, loss=args.loss,
                               proxy_method=args.proxy, proxy_confidence=args.proxy_confidence,
                               proxy_tau=args.tau, proxy_weight=args.proxy_weight,
                               proxy_max_disparity=proxy_range,
                               proxy_sgbm_mode=args.sgbm_mode)
        config.validate()
        for mode in args.mode:
            adapter = OnlineAdapter.from_weights(weights, replace(config, mode=mode), device)
            label = mode if mode == "none" or args.loss == "photometric" \
                else f"{mode}+{args.proxy if args.loss == 'proxy' else 'photo+' + args.proxy}"
            LOG.info("MADNet, mode %s, loss %s, weights %s (%s), device %s", mode, args.loss,
                     weights, adapter.info.trained_on, device)
            result = run_sequence(samples, madnet_predictor(adapter), label,
                                  replace(options, save_dir=save_dir(label)))
            result["summary"]["weights"] = weights
            result["summary"]["loss"] = "none" if mode == "none" else args.loss
            results.append(result)
    if args.method in ("sgbm", "both"):
        max_disp = args.max_disparity or _sgbm_range(samples)
        sgbm = SgbmConfig.for_max_disparity(max_disp, mode=args.sgbm_mode)
        result = run_sequence(samples, sgbm_predictor(sgbm), "sgbm",
                              replace(options, save_dir=save_dir("sgbm")))
        results.append(result)

    if args.method == "proxy":
        proxy = AdapterConfig(proxy_method=args.proxy, proxy_confidence=args.proxy_confidence,
                              proxy_tau=args.tau, proxy_max_disparity=proxy_range,
                              proxy_sgbm_mode=args.sgbm_mode)
        proxy.validate()
        for tau in (None, args.tau):
            label = f"proxy-{args.proxy}" + ("" if tau is None else
                                              f"-{args.proxy_confidence}>{tau:g}")
            results.append(run_sequence(samples, proxy_predictor(proxy.proxy_config(), tau),
                                        label, replace(options, save_dir=save_dir(label))))
    print(format_table(results))
    if args.json is not None:
        _write_json(args.json, results[0] if len(results) == 1 else {"runs": results})
    return 0


def _sgbm_range(samples) -> float:
    """SGBM needs a search range: the largest ground-truth disparity of the first frame with
    some margin, else 128 (KITTI-like)."""
    first = samples[0]
    if first.disparity is not None:
        finite = first.disparity[np.isfinite(first.disparity)]
        if finite.size:
            return float(finite.max() * 1.1)
    return 128.0


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=1)
    os.replace(tmp, path)
