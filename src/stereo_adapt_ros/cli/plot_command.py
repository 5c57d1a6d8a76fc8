"""``stereo-adapt plot``: PNG figures of training curves and of per-frame evaluation metrics.

Needs matplotlib (``pip install '.[plot]'`` in the clone; the test extra has it too).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TRAINING_PANELS = (("train_loss", "training loss (multi-scale L1, px)", True),
                   ("synthetic_EPE", "held-out synthetic EPE (px)", True),
                   ("motorcycle_D1", "Motorcycle D1_all (%), no adaptation", False),
                   ("motorcycle_EPE", "Motorcycle EPE (px), no adaptation", True))


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "plot", help="PNG plots: training curves (scalars.jsonl) or per-frame metrics (eval JSON)",
        description="'training': the four validation curves of a stereo-adapt train run. "
                    "'frames': a per-frame metric of every run in stereo-adapt eval --json "
                    "files, one line per run.")
    parser.add_argument("kind", choices=("training", "frames"))
    parser.add_argument("inputs", nargs="+", type=Path,
                        help="scalars.jsonl (training) or eval JSON files (frames)")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--metric", default="D1_all", help="frames: D1_all, EPE, bad3 or loss")
    parser.add_argument("--max-frames", type=int, default=None, help="frames: plot the first N")
    parser.add_argument("--title", default=None)
    parser.add_argument("--label", action="append", default=None, metavar="NAME",
                        help="frames: a name for each input file, in order (default: its "
                             "weights); each line is labelled 'NAME, mode'")
    parser.set_defaults(run=run)


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ValueError("plotting needs matplotlib: pip install '.[plot]' in this package's "
                         "clone") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def read_scalars(path: Path) -> list[dict]:
    """The records of a scalars.jsonl file (a clear error for a malformed line)."""
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON ({error})") from error
    if not records:
        raise ValueError(f"{path} has no records")
    return records


def read_runs(path: Path) -> list[dict]:
    """The runs of an eval JSON file ({summary, frames} or {runs: [...]})."""
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error})") from error
    runs = payload.get("runs", [payload]) if isinstance(payload, dict) else None
    if not runs or not all(isinstance(r, dict) and "frames" in r for r in runs):
        raise ValueError(f"{path} is not a stereo-adapt eval --json file")
    return runs


def run(args: argparse.Namespace) -> int:
    plt = _pyplot()
    if args.kind == "training":
        figure, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
        for path in args.inputs:
            records = read_scalars(path)
            for axis, (key, title, log) in zip(axes.flat, TRAINING_PANELS):
                points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
                if points:
                    axis.plot(*zip(*points), label=path.parent.name or str(path))
                axis.set_title(title)
                axis.set_xlabel("step")
                axis.grid(alpha=0.3)
                if log:
                    axis.set_yscale("log")
        if len(args.inputs) > 1:
            axes.flat[0].legend()
    else:
        if args.label is not None and len(args.label) != len(args.inputs):
            raise ValueError(f"--label given {len(args.label)} times for "
                             f"{len(args.inputs)} input files")
        names = args.label or [None] * len(args.inputs)
        figure, axis = plt.subplots(figsize=(10, 5), constrained_layout=True)
        for path, name in zip(args.inputs, names):
            for result in read_runs(path):
                frames = result["frames"][:args.max_frames]
                points = [(f["index"], f[args.metric]) for f in frames
                          if f.get(args.metric) is not None]
                if not points:
                    raise ValueError(f"{path}: no per-frame {args.metric!r} values")
                summary = result.get("summary", {})
                label = summary.get("mode", path.stem)
                if name is None and summary.get("weights"):
                    name = Path(str(summary["weights"])).stem  # files often differ by these
                if name is not None:
                    label = f"{name}, {label}"
                axis.plot(*zip(*points), label=label)
        axis.set_xlabel("frame")
        axis.set_ylabel(args.metric)
        axis.grid(alpha=0.3)
        axis.legend()
    if args.title:
        figure.suptitle(args.title)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    plt.close(figure)
    print(args.out)
    return 0
