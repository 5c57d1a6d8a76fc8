"""``stereo-adapt adapt``: offline self-supervised adaptation of a recorded environment."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..adaptation.adapter import AdapterConfig
from ..adaptation.precision import select_device
from ..data.datasets import open_dataset
from ..options import declared_options
from ..training.offline import OfflineConfig, adapt_offline
from .arguments import add_option, option_values

LOG = logging.getLogger("stereo_adapt_ros.adapt")
ADAPTER_OPTIONS = declared_options(AdapterConfig)
OFFLINE_OPTIONS = declared_options(OfflineConfig)
#: Offline, the whole network adapts (every frame is seen several times, there is time).
OFFLINE_DEFAULTS = {"adaptation_mode": "full"}


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "adapt", help="fit the network to a recording, without labels, before deployment",
        description="Several self-supervised epochs (the online step: photometric, proxy or "
                    "both) over a rosbag2 or any dataset eval reads. The last --holdout share "
                    "of the frames is held out; its photometric loss, computed without "
                    "adapting, picks the epoch whose weights are kept and stops the run. Writes "
                    "OUT (the weights, for the node's weights:=OUT), and beside it "
                    "OUT.run/checkpoint.safetensors and OUT.run/epochs.jsonl (--resume "
                    "continues from them).")
    parser.add_argument("data", help="a rosbag2 (.db3/.mcap folder), KITTI, Middlebury, CSV "
                                     "or stereodemo folder, or 'oakd'")
    parser.add_argument("--out", type=Path, required=True, help="the adapted weights file "
                                                                 "(.safetensors)")
    parser.add_argument("--weights", default="synthetic", help="weights to start from")
    parser.add_argument("--device", default="auto")
    for declared in OFFLINE_OPTIONS.values():
        add_option(parser, declared)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    for declared in ADAPTER_OPTIONS.values():
        if declared.name in ("seed",):
            continue
        add_option(parser, declared, **({"default": OFFLINE_DEFAULTS[declared.name]}
                                         if declared.name in OFFLINE_DEFAULTS else {}))
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    samples = open_dataset(args.data)
    values = option_values(args, [o for n, o in ADAPTER_OPTIONS.items() if n != "seed"])
    adapter_config = AdapterConfig(**values, seed=args.seed)
    adapter_config.validate()
    config = OfflineConfig(**option_values(args, OFFLINE_OPTIONS.values()))
    summary = adapt_offline(samples, args.weights, adapter_config, config, args.out,
                            args.out.with_name(args.out.name + ".run"),
                            select_device(args.device), resume=args.resume,
                            progress=not args.no_progress)
    print(json.dumps(summary, indent=1))
    LOG.info("best epoch %d of %d: held-out photometric loss %.4f (start %.4f); start the node "
             "with weights:=%s", summary["best_epoch"], summary["epochs_run"],
             summary["best"]["heldout_loss"], summary["start"]["heldout_loss"], args.out)
    return 0
