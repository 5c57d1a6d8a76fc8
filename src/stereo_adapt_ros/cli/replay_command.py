"""``stereo-adapt replay``: publish a rosbag2 or dataset to the node, optionally scoring what it
publishes back."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..data.bag import (BAG_PAIR_TOLERANCE_S, RosbagStereo, read_bag_calibration,
                        read_bag_camera_infos)
from ..data.datasets import OakdPairs, open_dataset
from ..evaluation.figures import have_matplotlib, write_frame_metrics_plot
from .arguments import image_size, positive_int
from ..data.stereo_camera import StereoCamera, motorcycle_camera, read_middlebury_calibration

LOG = logging.getLogger("stereo_adapt_ros.replay")


def _rate(text: str) -> str | float:
    if text in ("recorded", "fast"):
        return text
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"rate must be recorded, fast or > 0 Hz, got {text!r}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text!r}")
    return value


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "replay", help="publish a rosbag2 or dataset to the node (and score its output)",
        description="Publish left/right rgb8 images and camera_info from DATA (any dataset "
                    "'stereo-adapt eval' reads; none: the embedded Motorcycle pan). With "
                    "--evaluate, subscribe to the node's disparity and report D1/EPE per frame "
                    "and overall.")
    parser.add_argument("data", nargs="?", default=None,
                        help="rosbag2 (.db3/.mcap/folder), KITTI, Middlebury, CSV list")
    parser.add_argument("--rate", type=_rate, default="recorded",
                        help="recorded (the stamps' rate, 10 Hz without stamps), fast (next "
                             "pair when the node has answered the previous one), or Hz")
    parser.add_argument("--clock", action="store_true",
                        help="publish /clock and stamp with the recorded stamps (use_sim_time; "
                             "a bag's own, so that its TF lines up)")
    parser.add_argument("--evaluate", action="store_true",
                        help="score the node's disparity against the ground truth")
    parser.add_argument("--focal", type=float, default=None,
                        help="focal length in pixels for camera_info (with --baseline)")
    parser.add_argument("--baseline", type=float, default=None, help="baseline in metres")
    parser.add_argument("--namespace", default="", help="namespace of the node's topics")
    parser.add_argument("--node", default=None,
                        help="the node's full name (default: stereo_adapt in --namespace)")
    parser.add_argument("--left-topic", default=None, help="the bag's left image topic")
    parser.add_argument("--right-topic", default=None, help="the bag's right image topic")
    parser.add_argument("--disparity-topic", default=None,
                        help="the bag's ground-truth disparity topic")
    parser.add_argument("--tolerance", type=_seconds, default=BAG_PAIR_TOLERANCE_S,
                        metavar="SECONDS",
                        help="pair a bag's left and right images whose stamps differ by up to "
                             "this (nearest first; 0: equal stamps only); a pair is published "
                             "with the left stamp (default: %(default)g)")
    parser.add_argument("--repeat", type=positive_int, default=1, help="replay the data N times")
    parser.add_argument("--max-frames", type=positive_int, default=None)
    parser.add_argument("--pan-frames", type=positive_int, default=40,
                        help="frames of the embedded pan")
    parser.add_argument("--pan-crop", type=image_size, default=None, metavar="HxW",
                        help="window of the embedded pan in the original 500x741 pair "
                             "(default: 640 wide, full height)")
    parser.add_argument("--pan-scale", type=float, default=1.0,
                        help="resize factor of the embedded pan's frames (e.g. --pan-crop "
                             "160x608 --pan-scale 2 gives 320x1216 frames)")
    parser.add_argument("--max-disparity", type=float, default=None,
                        help="ignore ground truth above this; colour scale of --save")
    parser.add_argument("--wait", type=float, default=120.0,
                        help="seconds to wait for a node subscribed to all four inputs (both "
                             "images and camera_infos) before the first pair; exit status 3 "
                             "naming the inputs nobody subscribed to")
    parser.add_argument("--frame-timeout", type=float, default=120.0,
                        help="seconds to wait for each output with --rate fast")
    parser.add_argument("--save", type=Path, default=None, metavar="DIR",
                        help="write a PNG per saved frame here (left | disparity | confidence "
                             "| error against ground truth, with D1/EPE; colourised disparity "
                             "alone without matplotlib), and the per-frame D1/EPE plot beside "
                             "it as DIR.png")
    parser.add_argument("--save-every", type=positive_int, default=10, help="save one frame in N")
    parser.add_argument("--rviz-outputs", action="store_true",
                        help="also subscribe to disparity/color, points2 and depth (computed "
                             "by the node only while subscribed), e.g. to measure their cost")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="write {summary, frames} as JSON")
    parser.set_defaults(run=run)


def _samples(args: argparse.Namespace):
    if args.data is None or args.data == "motorcycle":
        height, width = args.pan_crop or (None, 640)
        return open_dataset(None, num_frames=args.pan_frames, crop_width=width,
                            crop_height=height, scale=args.pan_scale)
    bag_options = {key: value for key, value in (("left_topic", args.left_topic),
                                                 ("right_topic", args.right_topic),
                                                 ("disparity_topic", args.disparity_topic))
                   if value is not None}
    if _is_bag(Path(args.data)):
        bag_options["tolerance"] = args.tolerance
    return open_dataset(args.data, **bag_options)


def _is_bag(data: Path) -> bool:
    return data.suffix.lower() in (".mcap", ".db3") or (data / "metadata.yaml").is_file()


def _camera_for(args: argparse.Namespace, samples):
    if (args.focal is None) != (args.baseline is None):
        raise ValueError("give both --focal and --baseline, or neither")
    if args.focal is not None:
        def given(sample):
            height, width = sample.left.shape[:2]
            return StereoCamera(args.focal, args.focal, (width - 1) / 2, (height - 1) / 2,
                                args.baseline)
        return given
    if args.data is None or args.data == "motorcycle":
        return lambda sample: motorcycle_camera(sample.left.shape[1], sample.left.shape[0],
                                                args.pan_scale)
    if isinstance(samples, OakdPairs):
        LOG.info("camera_info from the stereodemo calibration")
        return lambda sample: samples.calibration
    data = Path(args.data)
    if _is_bag(data):
        camera = read_bag_calibration(data)
        if camera is not None:
            LOG.info("camera_info from the bag's left and right CameraInfo topics, as "
                     "recorded (distortion, K, R, P, ROI)")
            return lambda sample: camera
    middlebury = {path.parent.name: read_middlebury_calibration(path)
                  for path in [data / "calib.txt", *data.glob("*/calib.txt")]
                  if path.is_file() and (path.parent / "im0.png").is_file()}
    if middlebury:
        LOG.info("camera_info from the Middlebury calib.txt files")

        def scene(sample):
            if sample.name not in middlebury:
                raise ValueError(f"no calib.txt for Middlebury scene {sample.name!r}")
            return middlebury[sample.name]
        return scene
    LOG.warning("no calibration given (--focal, --baseline): camera_info gets a focal length "
                "of the image width and a 0.1 m baseline; disparity is unaffected, depth and "
                "points2 are not metric")

    def guessed(sample):
        height, width = sample.left.shape[:2]
        return StereoCamera(width, width, (width - 1) / 2, (height - 1) / 2, 0.1)
    return guessed


def _recorded_calibration(args: argparse.Namespace):
    """A bag's left and right camera_info as recorded (distortion, K, R, P, ROI), to publish
    as they are; None where --focal and --baseline replace them or the data has none."""
    if args.focal is not None or args.data is None or not _is_bag(Path(args.data)):
        return None
    return read_bag_camera_infos(args.data)


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from ..ros.replay import ReplayOptions, format_summary, replay

    samples = _samples(args)
    source = args.data or "the embedded Motorcycle pan"
    if isinstance(samples, RosbagStereo):
        print(f"paired {len(samples)} stereo pairs from {samples.left_topic} and "
              f"{samples.right_topic} (stamps up to {samples.tolerance:g} s apart); unpaired: "
              + ", ".join(f"{count} on {topic}" for topic, count in samples.unpaired.items()),
              flush=True)
    if not len(samples):
        print(f"stereo-adapt replay: nothing to replay in {source}", file=sys.stderr)
        return 2
    camera_for = _camera_for(args, samples)
    options = ReplayOptions(rate=args.rate, clock=args.clock, evaluate=args.evaluate,
                            namespace=args.namespace, node=args.node, repeat=args.repeat,
                            max_frames=args.max_frames, max_disparity=args.max_disparity,
                            wait_for_node_s=args.wait, frame_timeout_s=args.frame_timeout,
                            save_dir=args.save, save_every=args.save_every,
                            rviz_outputs=args.rviz_outputs)
    # Ctrl-C raises KeyboardInterrupt in the replay loop, which stops and reports what was
    # done; rclpy's own handler would shut the context down under it.
    rclpy.init(args=["stereo-adapt-replay"], signal_handler_options=SignalHandlerOptions.NO)
    try:
        print(f"replaying {len(samples)} pairs from {source} at rate {args.rate}", flush=True)
        result = replay(samples, camera_for, options, report=lambda line: print(line, flush=True),
                        recorded_header=samples.recorded_header
                        if isinstance(samples, RosbagStereo) else None,
                        calibration=_recorded_calibration(args))
    except TimeoutError as error:
        print(f"stereo-adapt replay: {error}", file=sys.stderr)
        return 3
    finally:
        rclpy.try_shutdown()
    summary = result.summary
    print(format_summary(summary), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "frames": result.frames}, indent=1))
    if args.save is not None and have_matplotlib():
        plot = args.save.with_name(args.save.name + ".png")
        if write_frame_metrics_plot(plot, result.frames, title=f"replay of {source}"):
            print(f"per-frame D1/EPE plot: {plot}", flush=True)
    if result.interrupted:
        return 130
    if "received" in summary and summary["received"] < summary["sent"]:
        print(f"{summary['sent'] - summary['received']} of {summary['sent']} pairs got no output")
        if not summary["received"]:
            print("stereo-adapt replay: the node published no disparity for any pair (see its "
                  "log: rejected inputs, or a namespace other than --namespace?)",
                  file=sys.stderr)
            return 1
    return 0
