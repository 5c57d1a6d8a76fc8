"""``stereo-adapt bench``: per-frame time of inference, MAD step and full step."""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from ..adaptation.adapter import AdapterConfig
from ..adaptation.precision import select_device
from ..evaluation.benchmark import BENCH_MODES, DEFAULT_SIZES, SPLIT_PARTS, benchmark_steps, \
    fast_path_variants
from ..options import declared_options
from .arguments import add_option, image_size, option_values, positive_int

ADAPTER_OPTIONS = declared_options(AdapterConfig)
#: The adapter's options bench times with.
FAST_PATH = tuple(ADAPTER_OPTIONS[name] for name in ("amp", "channels_last", "compile"))


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "bench", help="time inference, MAD and full adaptation steps side by side",
        description="Runs inference, a MAD step and a full step interleaved frame by frame "
                    "on the real Motorcycle pair resized to each size; prints medians, p90, "
                    "the ratios to inference, each mode's time split into network, "
                    "confidence, conversions and adaptation (medians), and OpenCV SGBM on "
                    "the same input.")
    parser.add_argument("--size", type=image_size, action="append", default=None,
                        help="HEIGHTxWIDTH, repeatable (default 320x1216, 480x640, 720x1280)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", default="random",
                        help="weights to time (timing does not depend on their values)")
    parser.add_argument("--frames", type=positive_int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads (default: all cores)")
    for declared in FAST_PATH:
        add_option(parser, declared)
    parser.add_argument("--compare", action="store_true",
                        help="time each fast-path setting on and off (plain, channels_last, "
                             "+amp, and +compile with --compile) side by side")
    add_option(parser, ADAPTER_OPTIONS["proxy_method"], default=None,
               help="also time adaptation with the photometric + proxy loss of this matcher "
                    "(it runs in a thread beside the network) and report how long each step "
                    "waited for it")
    add_option(parser, ADAPTER_OPTIONS["mad_loss_scale"], default=None, metavar="S",
               help="also time MAD steps whose block loss is computed at S x the input "
                    "resolution, beside the last variant")
    add_option(parser, ADAPTER_OPTIONS["proxy_scale"], default=None, metavar="S",
               help="also time the last variant with the proxy matching the pair resized by "
                    "S (proxy_scale), beside it")
    add_option(parser, ADAPTER_OPTIONS["proxy_pad"], default=None,
               help="also time the last variant with the sgbm proxy padded (--proxy-pad) or "
                    "not (--no-proxy-pad; the default pads), beside it")
    add_option(parser, ADAPTER_OPTIONS["reference_check_every"], default=None, metavar="N",
               help="also time the last variant with the frozen-reference check every N "
                    "adapted frames (reference_check_every; 0: off), beside it")
    add_option(parser, ADAPTER_OPTIONS["reference_check_backoff"], default=None, metavar="N",
               help="also time the last variant with the reference check's schedule backing "
                    "off to every N adapted frames while the adapted weights win "
                    "(reference_check_backoff), beside it")
    parser.add_argument("--disparity-only", action="store_true",
                        help="also time the last variant stepped for the disparity alone "
                             "(want_confidence=False, want_loss=False: what a node needs when "
                             "nobody reads its confidence and frame diagnostics)")
    parser.add_argument("--no-sgbm", action="store_true", help="skip the SGBM timing")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    device = select_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count() or 1)
    if args.compare:
        variants = fast_path_variants(device, with_compile=args.compile)
    else:
        variants = {"default": option_values(args, FAST_PATH)}
    if args.proxy_method:
        base = variants["plain"] if "plain" in variants else variants["default"]
        variants[f"photometric+{args.proxy_method} proxy"] = dict(
            base, adaptation_loss="both", proxy_method=args.proxy_method)
    if args.mad_loss_scale is not None:
        name, last = list(variants.items())[-1]
        scaled = dict(last, mad_loss_scale=args.mad_loss_scale, adaptation_loss="photometric")
        AdapterConfig(**scaled).validate()  # refused before any timing starts
        variants[f"{name}, MAD loss x{args.mad_loss_scale:g}"] = scaled
    if args.proxy_scale is not None:
        name, last = list(variants.items())[-1]
        scaled = dict(last, proxy_scale=args.proxy_scale)
        AdapterConfig(**scaled).validate()
        variants[f"{name}, proxy x{args.proxy_scale:g}"] = scaled
    if args.proxy_pad is not None:
        name, last = list(variants.items())[-1]
        variants[f"{name}, proxy {'padded' if args.proxy_pad else 'unpadded'}"] = dict(
            last, proxy_pad=args.proxy_pad)
    if args.reference_check_every is not None:
        name, last = list(variants.items())[-1]
        variants[f"{name}, reference every {args.reference_check_every}"] = dict(
            last, reference_check_every=args.reference_check_every)
    if args.reference_check_backoff is not None:
        name, last = list(variants.items())[-1]
        variants[f"{name}, check back-off {args.reference_check_backoff}"] = dict(
            last, reference_check_backoff=args.reference_check_backoff)
    disparity_only = []
    if args.disparity_only:
        name, last = list(variants.items())[-1]
        disparity_only.append(f"{name}, disparity only")
        variants[disparity_only[-1]] = dict(last)
    print(f"device {device} ({_device_name(device)}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    header = (f"{'size':>10} {'variant':>36} "
              + " ".join(f"{m + ' ms':>9} {m + ' p90':>9}" for m in BENCH_MODES)
              + f" {'MAD/inf':>7} {'full/inf':>8}")
    results = []
    for height, width in args.size or DEFAULT_SIZES:
        result = benchmark_steps(height, width, device, args.weights, args.frames, args.warmup,
                                 variants, sgbm=not args.no_sgbm,
                                 disparity_only=disparity_only)
        results.append(result)
        print(header)
        for name, row in result["variants"].items():
            print(f"{height}x{width:<6} {name:>36} "
                  + " ".join(f"{row[m]['median_ms']:>9.1f} {row[m]['p90_ms']:>9.1f}"
                             for m in BENCH_MODES)
                  + f" {row['ratio_mad']:>7.2f} {row['ratio_full']:>8.2f}")
            for mode in BENCH_MODES:
                split = row[mode]["split_median_ms"]
                print(f"{'':>47} {mode:>4} split, median ms: " + ", ".join(
                    f"{part} {split[part]:.1f}" for part in SPLIT_PARTS))
            print(f"{'':>47} ratios of the means: MAD/inf {row['mean_ratio_mad']:.2f}, "
                  f"full/inf {row['mean_ratio_full']:.2f}")
            print(f"{'':>47} MAD step by block, ms: " + ", ".join(
                f"{block} {ms:.0f}" for block, ms in row["mad"]["block_median_ms"].items()))
            if device.type == "cuda":
                print(f"{'':>47} peak MB: " + ", ".join(
                    f"{m} {row[m]['peak_mb']:.0f}" for m in BENCH_MODES))
            if "proxy_median_ms" in row["full"]:
                print(f"{'':>47} proxy matcher ms / step waited for it ms: " + ", ".join(
                    f"{m} {row[m]['proxy_median_ms']:.0f} / {row[m]['proxy_wait_median_ms']:.1f}"
                    for m in ("mad", "full")))
        if "sgbm" in result:
            print(f"{height}x{width:<6} {'OpenCV SGBM (CPU)':>36} "
                  f"{result['sgbm']['median_ms']:>9.1f} {result['sgbm']['p90_ms']:>9.1f}")
        print(f"peak resident memory of this process so far: {result['max_rss_mb']:.0f} MB",
              flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device_name": _device_name(device), "results": results}, indent=1))
    return 0


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()
