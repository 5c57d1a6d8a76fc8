"""``stereo-adapt proxy-confidence``: train the learned proxy confidence, and compare it with
the hand-made measures on held-out pairs with ground truth."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tqdm import tqdm

from ..adaptation.adapter import AdapterConfig
from ..adaptation.proxy import CONFIDENCE_MEASURES, PROXY_METHODS
from ..data.datasets import open_dataset
from ..data.sample import StereoSample
from ..network.proxy_confidence import save_proxy_confidence
from ..training.proxy_confidence import (ProxyConfidenceTraining, compare_measures,
                                         make_examples, train_network)
from ..training.run import TrainingRun
from ..options import declared_options
from .arguments import add_option, option_values

LOG = logging.getLogger("stereo_adapt_ros.proxy_confidence")
ADAPTER_OPTIONS = declared_options(AdapterConfig)
TRAINING_OPTIONS = declared_options(ProxyConfidenceTraining)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "proxy-confidence", help="train or compare the proxy's confidence measures",
        description="train: fit the learned proxy confidence (proxy_confidence=learned) on "
                    "pairs with ground truth (e.g. `stereo-adapt synth` folders of the train "
                    "split). compare: precision and recall of the pixels each measure keeps "
                    "at --tau, on held-out pairs with ground truth.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = actions.add_parser("train", help="train the learned proxy confidence")
    train.add_argument("data", nargs="+", help="datasets with ground truth (any eval reads)")
    train.add_argument("--out", type=Path, required=True, help="the network (.safetensors)")
    train.add_argument("--methods", default="sgbm,ad",
                       help="proxy matchers to learn from, comma-separated "
                            f"({', '.join(PROXY_METHODS)})")
    for declared in TRAINING_OPTIONS.values():
        add_option(train, declared)
    train.set_defaults(run=run_train)
    compare = actions.add_parser("compare", help="score every confidence measure")
    compare.add_argument("data", nargs="+", help="datasets with ground truth")
    # The adapter's options under compare's own, older flag names.
    add_option(compare, ADAPTER_OPTIONS["proxy_method"], "--method")
    add_option(compare, ADAPTER_OPTIONS["proxy_max_disparity"], "--max-disparity")
    add_option(compare, ADAPTER_OPTIONS["proxy_tau"], "--tau",
               help="kept pixels have a confidence above this (as proxy_tau; default: "
                    "%(default)s)")
    add_option(compare, ADAPTER_OPTIONS["proxy_pad"])
    compare.add_argument("--weights", default="",
                         help="the learned network (default: the shipped one)")
    compare.add_argument("--json", type=Path, help="also write the table here")
    compare.set_defaults(run=run_compare)


def _samples(specs: list[str]) -> list[StereoSample]:
    samples: list[StereoSample] = []
    for spec in specs:
        samples.extend(open_dataset(spec))
    return samples


def run_train(args: argparse.Namespace) -> int:
    config = ProxyConfidenceTraining(
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        **option_values(args, TRAINING_OPTIONS.values()))
    config.validate()
    samples = _samples(args.data)
    with tqdm(total=len(samples), desc="proxies", unit="pair") as bar:
        examples = make_examples(samples, config, progress=lambda done: bar.update(1))
    with TrainingRun(args.out.parent, "train", device_name="cpu", records=None) as run:
        network = train_network(examples, config, run)
    padding = "padded" if config.proxy_pad else "unpadded"
    trained_on = (f"{len(samples)} pairs of {', '.join(args.data)}; methods "
                  f"{', '.join(config.methods)} (SGBM {padding}); {config.steps} steps")
    save_proxy_confidence(args.out, network, trained_on)
    LOG.info("wrote %s (%s)", args.out, trained_on)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    ADAPTER_OPTIONS["proxy_max_disparity"].check(args.proxy_max_disparity)
    samples = _samples(args.data)
    table = compare_measures(samples, args.proxy_method, args.proxy_max_disparity,
                             args.proxy_tau, args.proxy_pad, args.weights)
    print(f"{len(samples)} pairs, proxy {args.proxy_method}"
          f"{'' if args.proxy_pad else ' unpadded'}, range {args.proxy_max_disparity}, "
          f"tau {args.proxy_tau:g}")
    print(f"{'measure':>10} {'precision':>10} {'recall':>8} {'density':>8}")
    for measure in (*CONFIDENCE_MEASURES, "all"):
        row = table[measure]
        print(f"{measure:>10} {row['precision']:>10.4f} {row['recall']:>8.4f} "
              f"{row['density']:>8.4f}")
    if args.json:
        args.json.write_text(json.dumps({"pairs": len(samples), "method": args.proxy_method,
                                         "proxy_pad": args.proxy_pad, "tau": args.proxy_tau,
                                         "table": table}, indent=1) + "\n")
    return 0
