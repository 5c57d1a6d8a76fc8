"""``stereo-adapt bench``: per-frame time of inference, MAD step and full step."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from ..adaptation.adapter import select_device
from ..evaluation.benchmark import BENCH_MODES, benchmark_steps


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, got {text!r}") from error
    if height < 8 or width < 8:
        raise argparse.ArgumentTypeError(f"size must be at least 8x8, got {text!r}")
    return height, width


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "bench", help="time inference, MAD and full adaptation steps side by side",
        description="Runs inference, a MAD step and a full step interleaved frame by frame "
                    "on the real Motorcycle pair resized to each size; prints medians, p90 "
                    "and the ratios to inference.")
    parser.add_argument("--size", type=_size, action="append", default=None,
                        help="HEIGHTxWIDTH, repeatable (default 320x1216)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", default="random",
                        help="weights to time (timing does not depend on their values)")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    device = select_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count() or 1)
    results = []
    header = f"{'size':>10} {'device':>6} " + " ".join(
        f"{m + ' ms':>10} {m + ' p90':>10}" for m in BENCH_MODES) + f" {'MAD/inf':>8} {'full/inf':>8}"
    print(header)
    for height, width in args.size or [(320, 1216)]:
        result = benchmark_steps(height, width, device, args.weights, args.frames, args.warmup)
        results.append(result)
        print(f"{height}x{width:<6} {device.type:>6} " + " ".join(
            f"{result[m]['median_ms']:>10.1f} {result[m]['p90_ms']:>10.1f}" for m in BENCH_MODES)
            + f" {result['ratio_mad']:>8.2f} {result['ratio_full']:>8.2f}", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"torch": torch.__version__,
                                         "threads": torch.get_num_threads(),
                                         "results": results}, indent=1))
    return 0
