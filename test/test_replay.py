"""A rosbag2 written with rosbags, replayed through the node (both in their own processes) and
evaluated against its ground truth: the scores must be those of the same weights run offline."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from ros_harness import NodeProcess, domain_for, loopback_env, small_pan
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from stereo_adapt_ros.adaptation import AdapterConfig, OnlineAdapter
from stereo_adapt_ros.data import encode_image
from stereo_adapt_ros.evaluation import MetricAccumulator
from stereo_adapt_ros.network import load_model, save_weights

FRAMES = 4


def write_bag(path, frames):
    typestore = get_typestore(Stores.ROS2_KILTED)
    types = typestore.types
    Image, Header = types["sensor_msgs/msg/Image"], types["std_msgs/msg/Header"]
    Time = types["builtin_interfaces/msg/Time"]

    def image(stamp, array, encoding):
        data, step = encode_image(array, encoding)
        return Image(header=Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9),
                                   frame_id="cam"), height=array.shape[0],
                     width=array.shape[1], encoding=encoding, is_bigendian=0, step=step,
                     data=np.frombuffer(data, np.uint8))

    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        topics = {name: writer.add_connection(f"/cam/{name}", "sensor_msgs/msg/Image",
                                              typestore=typestore)
                  for name in ("left/image_rect", "right/image_rect", "disparity")}
        for k, frame in enumerate(frames):
            stamp = 1_700_000_000 * 10**9 + k * 100_000_000
            truth = np.where(np.isnan(frame.disparity), 0.0, frame.disparity).astype(np.float32)
            for name, message in (("left/image_rect", image(stamp, frame.left, "rgb8")),
                                  ("right/image_rect",
                                   image(stamp, np.ascontiguousarray(frame.right[..., ::-1]),
                                         "bgr8")),
                                  ("disparity", image(stamp, truth, "32FC1"))):
                writer.write(topics[name], stamp,
                             typestore.serialize_cdr(message, "sensor_msgs/msg/Image"))
    return path


def test_bag_replay_through_the_node_is_scored_like_offline(tmp_path):
    frames = small_pan(FRAMES)
    bag = write_bag(tmp_path / "stereo_bag", frames)
    model, info, _ = load_model("random", seed=5)
    weights = tmp_path / "weights.safetensors"
    save_weights(weights, model.state_dict(), info)

    domain = domain_for(41)
    node = NodeProcess(domain, {"weights": str(weights), "adaptation_mode": "none"},
                       tmp_path / "node.log")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "stereo_adapt_ros", "replay", str(bag), "--evaluate",
             "--rate", "fast", "--disparity-topic", "/cam/disparity", "--focal", "200",
             "--baseline", "0.1", "--json", str(tmp_path / "replay.json"),
             "--save", str(tmp_path / "png"), "--save-every", "2", "--wait", "60"],
            env=loopback_env(domain), capture_output=True, text=True, timeout=150)
    finally:
        node.stop()
    logs = f"{done.stdout}\n{done.stderr}\nnode:\n{node.log()}"
    assert done.returncode == 0, logs
    report = json.loads((tmp_path / "replay.json").read_text())
    summary = report["summary"]
    assert summary["sent"] == summary["received"] == summary["frames_scored"] == FRAMES, logs
    assert [frame["index"] for frame in report["frames"]] == list(range(FRAMES))
    assert sorted(p.name[:4] for p in (tmp_path / "png").iterdir()) == ["0000", "0002"]
    assert "D1" in done.stdout and "frame    3" in done.stdout

    adapter = OnlineAdapter.from_weights(str(weights), AdapterConfig(adaptation_mode="none"))
    offline = MetricAccumulator()
    for frame, scored in zip(frames, report["frames"]):
        with torch.inference_mode():
            result = adapter.step(frame.left, frame.right)
        # The node publishes pixels pointing outside the right image as invalid.
        prediction = np.where(result.confidence > 0, result.disparity, np.nan)
        metrics = offline.add(prediction, frame.disparity)
        assert scored["D1_all"] == pytest.approx(metrics["D1_all"], abs=0.2)
        assert scored["EPE"] == pytest.approx(metrics["EPE"], rel=1e-3, abs=1e-3)
    assert summary["D1_all"] == pytest.approx(offline.summary()["D1_all"], abs=0.2)


def test_replay_with_clock_drives_a_sim_time_node(tmp_path):
    domain = domain_for(53)
    node = NodeProcess(domain, {"weights": "random", "use_sim_time": True},
                       tmp_path / "node.log")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "stereo_adapt_ros", "replay", "--pan-frames", "3",
             "--pan-crop", "192x320", "--pan-scale", "0.5", "--rate", "fast", "--clock",
             "--evaluate", "--json", str(tmp_path / "replay.json"), "--wait", "60"],
            env=loopback_env(domain), capture_output=True, text=True, timeout=120)
    finally:
        node.stop()
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\nnode:\n{node.log()}"
    report = json.loads((tmp_path / "replay.json").read_text())
    # Recorded time (the pan's 10 Hz stamps) from 1 s on, not the wall clock.
    assert [frame["stamp"] for frame in report["frames"]] == pytest.approx([1.0, 1.1, 1.2])
    assert report["summary"]["frames_scored"] == 3
