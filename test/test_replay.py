"""A rosbag2 written with rosbags, replayed through the node (both in their own processes) and
evaluated against its ground truth: the scores must be those of the same weights run offline.
Also: a bag from cameras synchronised in software, replayed under sim time into a namespaced
node with its own stamps and frame ids; Ctrl-C; a bag where nothing pairs."""

import json
import math
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from ros_harness import (NodeProcess, domain_for, loopback_env, small_pan, use_loopback_here,
                         wait_until)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from stereo_adapt_ros.adaptation import AdapterConfig, OnlineAdapter
from stereo_adapt_ros.data import encode_image
from stereo_adapt_ros.data.stereo_camera import CameraCalibration
from stereo_adapt_ros.evaluation import MetricAccumulator
from stereo_adapt_ros.network import load_model, save_weights

pytestmark = pytest.mark.ros

FRAMES = 4


BAG_START_NS = 1_700_000_000 * 10**9


def write_bag(path, frames, right_offset_ns=0, frame_ids=("cam", "cam"), calibration=None):
    """Left, right and ground-truth topics under /cam; the right views stamped
    ``right_offset_ns`` after the left ones, each view with its frame id; with
    ``calibration`` (left and right ``CameraCalibration``), camera_info topics beside them."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    types = typestore.types
    Image, Header = types["sensor_msgs/msg/Image"], types["std_msgs/msg/Header"]
    Time = types["builtin_interfaces/msg/Time"]
    CameraInfo, Roi = types["sensor_msgs/msg/CameraInfo"], types["sensor_msgs/msg/RegionOfInterest"]

    def camera_info(stamp, side, height, width):
        known = calibration[0 if side == "left" else 1]
        return CameraInfo(
            header=Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9),
                          frame_id=frame_ids[0 if side == "left" else 1]),
            height=height, width=width, distortion_model=known.distortion_model,
            d=np.array(known.d), k=np.array(known.k), r=np.array(known.r), p=np.array(known.p),
            binning_x=known.binning_x, binning_y=known.binning_y, roi=Roi(*known.roi))

    def image(stamp, array, encoding, frame_id=frame_ids[0]):
        data, step = encode_image(array, encoding)
        return Image(header=Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9),
                                   frame_id=frame_id), height=array.shape[0],
                     width=array.shape[1], encoding=encoding, is_bigendian=0, step=step,
                     data=np.frombuffer(data, np.uint8))

    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        topics = {name: writer.add_connection(f"/cam/{name}", "sensor_msgs/msg/Image",
                                              typestore=typestore)
                  for name in ("left/image_rect", "right/image_rect", "disparity")}
        infos = {side: writer.add_connection(f"/cam/{side}/camera_info",
                                             "sensor_msgs/msg/CameraInfo", typestore=typestore)
                 for side in ("left", "right") if calibration is not None}
        for k, frame in enumerate(frames):
            stamp = BAG_START_NS + k * 100_000_000
            right_stamp = stamp + right_offset_ns
            truth = np.where(np.isnan(frame.disparity), 0.0, frame.disparity).astype(np.float32)
            for name, message in (("left/image_rect", image(stamp, frame.left, "rgb8")),
                                  ("right/image_rect",
                                   image(right_stamp, np.ascontiguousarray(frame.right[..., ::-1]),
                                         "bgr8", frame_ids[1])),
                                  ("disparity", image(stamp, truth, "32FC1"))):
                writer.write(topics[name], message.header.stamp.sec * 10**9
                             + message.header.stamp.nanosec,
                             typestore.serialize_cdr(message, "sensor_msgs/msg/Image"))
            if calibration is not None:
                for side, at in (("left", stamp), ("right", right_stamp)):
                    info = camera_info(at, side, *frame.left.shape[:2])
                    writer.write(infos[side], at,
                                 typestore.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
    return path


@pytest.mark.slow
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


@pytest.mark.slow
def test_replay_with_clock_drives_a_sim_time_node_and_scores_the_published_disparity(tmp_path):
    """The pan's camera has the Middlebury principal point offset (doffs 15.5 px at this
    scale): the node publishes x_l - x_r + doffs, and the replay takes it back off before
    scoring, so its scores are the offline ones."""
    frames = small_pan(3)
    model, info, _ = load_model("random", seed=7)
    weights = tmp_path / "weights.safetensors"
    save_weights(weights, model.state_dict(), info)
    domain = domain_for(53)
    node = NodeProcess(domain, {"weights": str(weights), "adaptation_mode": "none",
                                "use_sim_time": True}, tmp_path / "node.log")
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
    # The pan's recorded 10 Hz stamps, from 1 s on (ROS time 0 means "not set").
    assert [frame["stamp"] for frame in report["frames"]] == pytest.approx([1.0, 1.1, 1.2])
    assert report["summary"]["frames_scored"] == 3
    assert all(frame["frame_id"] == "stereo_left_optical_frame" for frame in report["frames"])
    adapter = OnlineAdapter.from_weights(str(weights), AdapterConfig(adaptation_mode="none"))
    for frame, scored in zip(frames, report["frames"]):
        with torch.inference_mode():
            result = adapter.step(frame.left, frame.right)
        prediction = np.where(result.confidence > 0, result.disparity, np.nan)
        metrics = MetricAccumulator().add(prediction, frame.disparity)
        assert scored["EPE"] == pytest.approx(metrics["EPE"], rel=1e-3, abs=1e-3)


class _Listener:
    """Collects (stamp, frame_id) of the messages on ``topics`` in this process, spun in a
    thread while a replay runs in another."""

    def __init__(self, domain: int, topics) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import CameraInfo, Image

        use_loopback_here()
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("replay_listener", context=self.context)
        self.received = {topic: [] for topic in topics}
        self.messages = {topic: [] for topic in topics}

        def on_message(message, topic):
            self.messages[topic].append(message)
            self.received[topic].append((message.header.stamp.sec * 10**9
                                         + message.header.stamp.nanosec,
                                         message.header.frame_id))
        for topic in topics:
            kind = CameraInfo if topic.endswith("camera_info") else Image
            self.node.create_subscription(kind, topic,
                                          lambda m, t=topic: on_message(m, t), 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def close(self) -> None:
        import rclpy
        self.executor.shutdown()
        self._thread.join(timeout=10)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.mark.slow
def test_software_synchronised_bag_replays_with_its_stamps_and_frames_into_a_namespace(tmp_path):
    """Right views 3 ms after the left ones pair by the default tolerance; --clock keeps the
    bag's stamps to the nanosecond and the frame ids; --namespace without --node listens to
    the namespaced node's frame_stats."""
    frames = small_pan(3)
    bag = write_bag(tmp_path / "bag", frames, right_offset_ns=3_000_000,
                    frame_ids=("bag_left_optical", "bag_right_optical"))
    domain = domain_for(61)
    topics = ("/stereo/right/image_rect", "/stereo/right/camera_info", "/stereo/left/camera_info")
    listener = _Listener(domain, topics)
    node = None
    # The replay waits for the node, not for this listener: the node starts only once the
    # listener has discovered the replay's publishers, so that it hears every pair.
    replaying = subprocess.Popen(
        [sys.executable, "-m", "stereo_adapt_ros", "replay", str(bag), "--clock",
         "--evaluate", "--rate", "fast", "--namespace", "stereo", "--disparity-topic",
         "/cam/disparity", "--focal", "200", "--baseline", "0.1",
         "--json", str(tmp_path / "replay.json"), "--wait", "120"],
        env=loopback_env(domain), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: all(listener.node.count_publishers(t) for t in topics), 60)
        time.sleep(0.5)
        node = NodeProcess(domain, {"weights": "random", "adaptation_mode": "none",
                                    "use_sim_time": True}, tmp_path / "node.log",
                           ros_args=("-r", "__ns:=/stereo"))
        stdout, stderr = replaying.communicate(timeout=150)
        time.sleep(0.5)
    finally:
        if replaying.poll() is None:
            replaying.kill()
        listener.close()
        if node is not None:
            node.stop()
    done = subprocess.CompletedProcess(replaying.args, replaying.returncode, stdout, stderr)
    logs = f"{done.stdout}\n{done.stderr}\nnode:\n{node.log()}"
    assert done.returncode == 0, logs
    assert "paired 3 stereo pairs" in done.stdout and "0 on /cam/right/image_rect" in done.stdout
    report = json.loads((tmp_path / "replay.json").read_text())
    stamps = [BAG_START_NS + k * 100_000_000 for k in range(3)]
    assert [frame["stamp_ns"] for frame in report["frames"]] == stamps, logs
    assert {frame["frame_id"] for frame in report["frames"]} == {"bag_left_optical"}
    # The node's ~/frame_stats in the namespace was heard: each frame has its loss.
    assert all("loss" in frame for frame in report["frames"]), logs
    assert report["summary"]["frames_scored"] == 3
    # Each pair goes out with the left stamp (for the node's exact sync) and both frame ids.
    assert listener.received["/stereo/right/image_rect"] == [(t, "bag_right_optical")
                                                             for t in stamps]
    assert listener.received["/stereo/right/camera_info"] == [(t, "bag_right_optical")
                                                              for t in stamps]
    assert listener.received["/stereo/left/camera_info"] == [(t, "bag_left_optical")
                                                             for t in stamps]


@pytest.mark.slow
def test_a_replayed_camera_info_carries_the_recorded_distortion_k_r_p_and_roi(tmp_path):
    """A bag's camera_info goes out as recorded (issue 24 item 11): distortion model and
    coefficients, K, R, P, binning and ROI, with the replayed image's size and header."""
    tilt = 0.01  # a rectification rotation about y, radians
    rotation = (math.cos(tilt), 0.0, math.sin(tilt), 0.0, 1.0, 0.0,
                -math.sin(tilt), 0.0, math.cos(tilt))
    calibration = tuple(CameraCalibration(
        k=(201.5, 0.0, 79.25 + side, 0.0, 202.5, 47.75, 0.0, 0.0, 1.0),
        p=(200.0, 0.0, 80.0 + 6 * side, -200.0 * 0.12 * side,
           0.0, 200.0, 48.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        d=(-0.28, 0.07, 0.001, -0.002, 0.0, 0.01, 0.003 * side, 0.0005),
        distortion_model="rational_polynomial", r=rotation, binning_x=1, binning_y=1,
        roi=(4 + side, 6, 80, 150, True)) for side in (0, 1))
    bag = write_bag(tmp_path / "bag", small_pan(2), frame_ids=("bag_left", "bag_right"),
                    calibration=calibration)
    domain = domain_for(79)
    # All four inputs, as a stereo node: the replay waits until each is matched.
    topics = ("/left/image_rect", "/right/image_rect", "/left/camera_info", "/right/camera_info")
    listener = _Listener(domain, topics)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "stereo_adapt_ros", "replay", str(bag), "--rate", "10",
             "--wait", "60"], env=loopback_env(domain), capture_output=True, text=True,
            timeout=120)
        assert wait_until(lambda: all(len(listener.messages[t]) == 2 for t in topics), 10), \
            (done.stdout, done.stderr, listener.received)
    finally:
        listener.close()
    assert done.returncode == 0, (done.stdout, done.stderr)
    for side, recorded in zip(("left", "right"), calibration):
        for info, (image_stamp, _) in zip(listener.messages[f"/{side}/camera_info"],
                                          listener.received["/left/image_rect"]):
            assert (info.height, info.width) == (96, 160)
            assert info.header.frame_id == f"bag_{side}"
            assert info.header.stamp.sec * 10**9 + info.header.stamp.nanosec == image_stamp
            assert info.distortion_model == recorded.distortion_model
            assert tuple(info.d) == recorded.d
            assert (tuple(info.k), tuple(info.r), tuple(info.p)) == \
                (recorded.k, recorded.r, recorded.p)
            assert (info.binning_x, info.binning_y) == (1, 1)
            roi = info.roi
            assert (roi.x_offset, roi.y_offset, roi.height, roi.width, roi.do_rectify) == \
                recorded.roi


@pytest.mark.slow
def test_ctrl_c_during_a_replay_prints_the_summary_of_what_was_done(tmp_path):
    domain = domain_for(67)
    node = NodeProcess(domain, {"weights": "random", "adaptation_mode": "none"},
                       tmp_path / "node.log")
    replaying = subprocess.Popen(
        [sys.executable, "-m", "stereo_adapt_ros", "replay", "--pan-frames", "40",
         "--pan-crop", "192x320", "--pan-scale", "0.5", "--rate", "2", "--evaluate",
         "--wait", "60"],
        env=loopback_env(domain), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in replaying.stdout:
            lines.append(line)
            if line.startswith("frame    1"):
                break
        replaying.send_signal(signal.SIGINT)
        out, err = replaying.communicate(timeout=60)
    finally:
        replaying.kill()
        node.stop()
    out = "".join(lines) + out
    assert replaying.returncode == 130, f"{out}\n{err}\nnode:\n{node.log()}"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "pairs sent (interrupted)" in out and "overall over" in out, out


def test_a_replay_with_a_listener_on_some_inputs_only_names_the_others_and_sends_nothing():
    """The replay waits until each of the four inputs is matched (a message sent before its
    subscriber is matched is lost); a subscriber on the left image alone is not enough, and
    the error names the inputs nobody subscribed to."""
    domain = domain_for(83)
    listener = _Listener(domain, ("/left/image_rect",))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "stereo_adapt_ros", "replay", "--pan-frames", "2",
             "--wait", "3"], env=loopback_env(domain), capture_output=True, text=True,
            timeout=120)
    finally:
        listener.close()
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert done.stderr.strip().splitlines()[-1] == (
        "stereo-adapt replay: no node subscribed to /right/image_rect, /left/camera_info, "
        "/right/camera_info within 3 s"), done.stderr
    assert not listener.received["/left/image_rect"]


@pytest.mark.slow
def test_a_replay_that_does_not_listen_claims_no_count_of_outputs(tmp_path):
    """Without --evaluate or --rate fast the replay does not subscribe to the node's outputs:
    it says how many pairs it sent and that it did not count the outputs (not "received 0")."""
    from ros_harness import Client

    domain = domain_for(71)
    node = NodeProcess(domain, {"weights": "random", "adaptation_mode": "none"},
                       tmp_path / "node.log")
    watcher = Client(domain, outputs=("disparity",))  # what the node did publish
    try:
        replaying = subprocess.Popen(
            [sys.executable, "-m", "stereo_adapt_ros", "replay", "--pan-frames", "6",
             "--pan-crop", "192x320", "--pan-scale", "0.5", "--rate", "2", "--wait", "60",
             "--json", str(tmp_path / "replay.json")],
            env=loopback_env(domain), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watcher.wait(lambda: replaying.poll() is not None, 120)
        out, err = replaying.communicate(timeout=30)
    finally:
        watcher.close()
        node.stop()
    assert replaying.returncode == 0, out + err + node.log()
    assert watcher.received["disparity"], node.log()
    assert "6 pairs sent; outputs not counted" in out, out
    assert "received 0" not in out and "got no output" not in out, out
    summary = json.loads((tmp_path / "replay.json").read_text())["summary"]
    assert summary["sent"] == 6 and "received" not in summary, summary


@pytest.mark.slow
def test_a_bag_where_nothing_pairs_is_refused_with_the_reason(tmp_path):
    bag = write_bag(tmp_path / "bag", small_pan(2), right_offset_ns=50_000_000)
    for command in (["replay", str(bag)], ["eval", str(bag), "--adaptation-mode", "none"]):
        done = subprocess.run([sys.executable, "-m", "stereo_adapt_ros", *command],
                              env=loopback_env(domain_for(71)), capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "no stereo pair" in done.stderr and "0.050000 s apart" in done.stderr, \
            done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_replay_saves_composites_of_each_saved_frame_and_the_per_frame_plot(tmp_path):
    """--save writes, per saved frame, one PNG of four frame-sized panels (left | disparity |
    confidence | error), and DIR.png with D1 and EPE per frame."""
    import cv2

    domain = domain_for(73)
    node = NodeProcess(domain, {"weights": "random", "adaptation_mode": "none"},
                       tmp_path / "node.log")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "stereo_adapt_ros", "replay", "--pan-frames", "3",
             "--pan-crop", "192x320", "--pan-scale", "0.5", "--rate", "fast", "--evaluate",
             "--save", str(tmp_path / "frames"), "--save-every", "2", "--wait", "60"],
            env=loopback_env(domain), capture_output=True, text=True, timeout=120)
    finally:
        node.stop()
    logs = f"{done.stdout}\n{done.stderr}\nnode:\n{node.log()}"
    assert done.returncode == 0, logs
    saved = sorted((tmp_path / "frames").iterdir())
    assert [path.name[:4] for path in saved] == ["0000", "0002"], logs
    height, width = small_pan(1)[0].left.shape[:2]
    for path in saved:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        composite = cv2.imread(str(path))
        assert composite is not None, path
        assert 3.5 * width <= composite.shape[1] <= 5.5 * width, composite.shape
        assert height <= composite.shape[0] <= 3 * height, composite.shape
        # Not a blank canvas: the panels and colour bars are drawn.
        assert len(np.unique(composite.reshape(-1, 3), axis=0)) > 100
    plot = cv2.imread(str(tmp_path / "frames.png"))
    assert plot is not None and plot.shape[1] > 400, logs
    assert "per-frame D1/EPE plot" in done.stdout
