"""The node in its own process, driven from this one over real DDS (loopback only): outputs,
parameters, services, bad input, start-up and shutdown. Images are 96 x 160 frames of the real
Motorcycle pair."""

import math
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ros_harness import (ROOT, Client, NodeProcess, compressed_image_msg, domain_for, loopback_env,
                         small_pan)

from stereo_adapt_ros.data import decode_image, motorcycle_pan
from stereo_adapt_ros.data.stereo_camera import StereoCamera
from stereo_adapt_ros.network import load_model, read_weights, save_weights
from weights_header import with_metadata

pytestmark = pytest.mark.ros

OUTPUT_TIMEOUT_S = 60.0
FOCAL, BASELINE = 200.0, 0.12
#: The right principal point 6 px right of the left one (``StereoCamera.doffs``).
DOFFS = 6.0


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("node")
    model, info, _ = load_model("random", seed=3)
    initial = folder / "initial.safetensors"
    save_weights(initial, model.state_dict(), info)
    # What a save killed midway leaves (save_weights' temp file of a process that is gone).
    stale = folder / f".saved.safetensors.tmp-{dead_pid()}-x1y2z3"
    stale.write_bytes(b"half a file")
    domain = domain_for(17)
    node = NodeProcess(domain, {"weights": str(initial), "adaptation_mode": "mad",
                                "save_path": str(folder / "saved.safetensors"),
                                "max_disparity": 100.0}, folder / "node.log")
    client = Client(domain, outputs=tuple(Client.OUTPUTS))
    try:
        client.wait_for_node()
        yield {"node": node, "client": client, "folder": folder, "initial": initial,
               "domain": domain, "frames": small_pan(4), "stamp": [1_700_000_000 * 10**9],
               "stale": stale}
    finally:
        client.close()
        node.stop()


def next_stamp(setup) -> int:
    setup["stamp"][0] += 100_000_000
    return setup["stamp"][0]


def process_pair(setup, index=0, **kwargs):
    """Publish frame ``index`` and wait for its disparity; returns (stamp, disparity msg)."""
    client, frame = setup["client"], setup["frames"][index]
    stamp = next_stamp(setup)
    client.publish(frame.left, frame.right, stamp, **kwargs)
    assert client.wait(lambda: stamp in client.received["disparity"], OUTPUT_TIMEOUT_S), \
        setup["node"].log()
    return stamp, client.received["disparity"][stamp]


def saved_weights(setup, name):
    ok, message = setup["client"].control.trigger("save_weights")
    assert ok, message
    target = setup["folder"] / name
    (setup["folder"] / "saved.safetensors").replace(target)
    return read_weights(target)[0]


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def status(setup):
    return setup["client"].control.status()


def test_stale_temporaries_of_a_killed_save_are_removed_at_start(setup):
    assert not setup["stale"].exists()
    assert f"removed {setup['stale']}" in setup["node"].log()


def test_one_output_per_pair_with_the_left_header_and_camera_geometry(setup):
    """DisparityImage as stereo_image_proc publishes it: d = x_l - x_r - (cx_l - cx_r), so
    that Z = f t / d holds for the published values and agrees with depth and points2."""
    client = setup["client"]
    camera = StereoCamera(FOCAL, FOCAL, 80.0, 48.0, BASELINE, doffs=DOFFS)
    for index in range(3):
        stamp, disparity = process_pair(setup, index, camera=camera, frame_id="cam_left")
        assert client.wait(lambda: all(stamp in client.received[t] for t in Client.OUTPUTS), 5)
        assert disparity.header.frame_id == "cam_left"
        assert disparity.image.encoding == "32FC1"
        assert (disparity.image.height, disparity.image.width) == (96, 160)
        assert disparity.f == pytest.approx(FOCAL) and disparity.t == pytest.approx(BASELINE)
        assert disparity.min_disparity == DOFFS and disparity.max_disparity == 100 + DOFFS
        assert disparity.delta_d > 0
        values = decode_image(disparity.image.data, 96, 160, "32FC1", disparity.image.step, 0)
        valid = values >= disparity.min_disparity
        window = disparity.valid_window
        inside = np.zeros_like(valid)
        inside[window.y_offset:window.y_offset + window.height,
               window.x_offset:window.x_offset + window.width] = True
        assert valid.any() and not (valid & ~inside).any()
        assert valid[:, window.x_offset].any() and valid[window.y_offset].any()
        confidence = client.received["confidence"][stamp]
        assert (confidence.encoding, confidence.height, confidence.width) == ("32FC1", 96, 160)
        conf = decode_image(confidence.data, 96, 160, "32FC1", confidence.step, 0)
        assert conf.min() >= 0 and conf.max() <= 1
        color = client.received["disparity/color"][stamp]
        assert (color.encoding, color.height, color.width) == ("bgr8", 96, 160)
        depth = client.received["depth"][stamp]
        depth_values = decode_image(depth.data, 96, 160, "32FC1", depth.step, 0)
        # Z = f t / d with the message's own f, t and values; zero disparity is a point at
        # infinity (no depth), and so is every invalid pixel.
        finite = valid & (values > 0)
        np.testing.assert_allclose(depth_values[finite],
                                   disparity.f * disparity.t / values[finite], rtol=1e-5)
        assert np.isnan(depth_values[~finite]).all()
        points = client.received["points2"][stamp]
        assert (points.height, points.width, points.point_step) == (96, 160, 16)
        assert [f.name for f in points.fields] == ["x", "y", "z", "rgb"]
        xyz = np.frombuffer(bytes(points.data), "<f4").reshape(96, 160, 4)[..., :3]
        np.testing.assert_allclose(xyz[..., 2], depth_values, rtol=1e-6)
        for topic in Client.OUTPUTS:
            assert client.received[topic][stamp].header.frame_id == "cam_left"


def test_camera_info_beside_each_output_image_with_its_header(setup):
    """confidence, disparity/color and depth each come with <topic>/camera_info (as
    depth_image_proc, rtabmap and nvblox expect): the left camera's calibration, the image's
    header and size (issue 24 item 11)."""
    from std_msgs.msg import Header

    from stereo_adapt_ros.ros.conversion import camera_info_msgs

    client = setup["client"]
    camera = StereoCamera(FOCAL, FOCAL, 80.0, 48.0, BASELINE, doffs=DOFFS)
    stamp, _ = process_pair(setup, 1, camera=camera, frame_id="cam_left_optical")
    left_info = camera_info_msgs(camera, 96, 160, Header())[0]
    for topic in ("confidence", "disparity/color", "depth"):
        assert client.wait(lambda: stamp in client.received[topic]
                           and stamp in client.received[f"{topic}/camera_info"], 10), topic
        image = client.received[topic][stamp]
        info = client.received[f"{topic}/camera_info"][stamp]
        assert info.header == image.header, topic
        assert info.header.frame_id == "cam_left_optical"
        assert (info.height, info.width) == (image.height, image.width) == (96, 160)
        for field in ("k", "p", "r", "d"):
            np.testing.assert_array_equal(getattr(info, field), getattr(left_info, field))
        assert info.distortion_model == left_info.distortion_model


def test_a_burst_is_dropped_down_to_the_newest_pairs_and_counted(setup):
    client = setup["client"]
    before = status(setup)
    frame = setup["frames"][0]
    stamps = [next_stamp(setup) for _ in range(8)]
    for stamp in stamps:
        client.publish(frame.left, frame.right, stamp)
    assert client.wait(lambda: stamps[-1] in client.received["disparity"], OUTPUT_TIMEOUT_S)
    client.wait(lambda: False, 1.5)
    after = status(setup)
    answered = [s for s in stamps if s in client.received["disparity"]]
    delta = {key: int(after[key]) - int(before[key])
             for key in ("frames_in", "frames_out", "dropped")}
    assert delta["frames_out"] == len(answered)
    assert delta["frames_in"] == delta["frames_out"] + delta["dropped"]
    assert delta["dropped"] >= 1 and len(answered) < len(stamps)


def test_modes_pause_reset_and_save_round_trip(setup):
    control = setup["client"].control
    assert control.set("adaptation_mode", "none") == (True, "")
    fixed_before = saved_weights(setup, "none_before.safetensors")
    process_pair(setup, 1)
    process_pair(setup, 2)
    assert same(fixed_before, saved_weights(setup, "none_after.safetensors"))

    assert control.set("adaptation_mode", "full")[0]
    process_pair(setup, 1)
    adapted = saved_weights(setup, "full.safetensors")
    assert not same(fixed_before, adapted)

    assert control.pause(True)[0]
    process_pair(setup, 2)
    assert same(adapted, saved_weights(setup, "paused.safetensors"))
    assert control.pause(False)[0]

    assert control.set("adaptation_mode", "mad")[0]
    process_pair(setup, 3)
    assert not same(adapted, saved_weights(setup, "mad.safetensors"))

    ok, message = control.trigger("reset_weights")
    assert ok, message
    initial = read_weights(setup["initial"])[0]
    reset = saved_weights(setup, "reset.safetensors")
    assert same({k: reset[k] for k in initial}, initial)

    # The saved file loads back as the node's weights, identical.
    assert control.set("weights", str(setup["folder"] / "full.safetensors"))[0]
    assert control.set("adaptation_mode", "none")[0]
    assert control.trigger("reset_weights")[0]
    assert same(adapted, saved_weights(setup, "reloaded.safetensors"))
    assert status(setup)["weights"].endswith("full.safetensors")


def test_a_storm_of_service_calls_loses_no_pair_and_status_keeps_coming(setup):
    """Forty service calls at once, each waiting for the worker, while pairs stream: every
    pair is answered, every call is, and ~/status keeps its 1 Hz."""
    import time

    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from std_srvs.srv import SetBool, Trigger

    client = setup["client"]
    node = client.node
    # Deep enough for the whole burst on this side: a client's default depth of 10 would let
    # its own writer replace requests not yet acknowledged.
    qos = QoSProfile(depth=50)
    pause = node.create_client(SetBool, "/stereo_adapt/pause_adaptation", qos_profile=qos)
    save = node.create_client(Trigger, "/stereo_adapt/save_weights", qos_profile=qos)
    heard: list[float] = []
    status_sub = node.create_subscription(DiagnosticArray, "/stereo_adapt/status",
                                          lambda message: heard.append(time.monotonic()), 10)
    try:
        assert pause.wait_for_service(timeout_sec=10) and save.wait_for_service(timeout_sec=10)
        start = time.monotonic()
        calls = [pause.call_async(SetBool.Request(data=False)) for _ in range(30)]
        calls += [save.call_async(Trigger.Request()) for _ in range(10)]
        stamps = []
        for k in range(6):
            stamp = next_stamp(setup)
            stamps.append(stamp)
            frame = setup["frames"][k % 4]
            client.publish(frame.left, frame.right, stamp)
            assert client.wait(lambda: stamp in client.received["disparity"], 20.0), \
                f"pair {k} got no output during the storm\n{setup['node'].log()}"
        assert client.wait(lambda: all(call.done() for call in calls), 60.0), \
            f"{sum(not call.done() for call in calls)} calls unanswered"
        end = time.monotonic()
        client.wait(lambda: False, 1.5)
    finally:
        node.destroy_subscription(status_sub)
        node.destroy_client(pause)
        node.destroy_client(save)
    assert all(call.result().success for call in calls)
    during = [start] + [t for t in heard if start <= t <= end] + [end]
    gaps = np.diff(during)
    assert gaps.max() < 3.0, f"~/status stalled {gaps.max():.1f} s in a {end - start:.1f} s storm"


def test_proxy_losses_switch_at_runtime_and_report_their_density(setup):
    control = setup["client"].control
    assert control.set("adaptation_mode", "mad")[0]
    assert control.set("proxy_method", "census")[0]
    for loss in ("both", "proxy"):
        assert control.set("adaptation_loss", loss)[0]
        before = saved_weights(setup, f"{loss}_before.safetensors")
        process_pair(setup, 3)
        assert not same(before, saved_weights(setup, f"{loss}_after.safetensors"))
        # ~/status comes at 1 Hz and may predate the frame: read until it includes it.
        values = status(setup)
        for _ in range(3):
            if math.isfinite(float(values["proxy_density"])):
                break
            values = status(setup)
        assert values["adaptation_loss"] == loss
        assert 0.05 < float(values["proxy_density"]) <= 1
    assert control.set("adaptation_loss", "photometric")[0]


def test_idle_adaptation_keeps_adapting_between_pairs(setup):
    control = setup["client"].control
    assert control.set("adaptation_mode", "full")[0]
    assert control.set("learning_rate", "1e-5")[0]
    process_pair(setup, 0)
    quiet = saved_weights(setup, "idle_off.safetensors")
    assert same(quiet, saved_weights(setup, "idle_off_again.safetensors"))  # no pair, no step
    assert control.set("idle_adaptation", "true")[0]
    values = status(setup)
    for _ in range(5):
        if int(values["idle_steps"]) > 0:
            break
        values = status(setup)
    assert int(values["idle_steps"]) > 0
    assert not same(quiet, saved_weights(setup, "idle_on.safetensors"))
    # A new pair still gets through at once (it waits at most one step).
    process_pair(setup, 1)
    assert control.set("idle_adaptation", "false")[0]
    assert control.set("learning_rate", "1e-4")[0]


def test_a_destructive_learning_rate_is_reset_and_counted(setup):
    """The shipped weights (a random network has no spread to lose) with Adam at rate 1 (the
    optimiser is not a node parameter): every weight moves by about the rate within a frame or
    two; the guard restores the initial ones."""
    control = setup["client"].control
    assert control.set("weights", "synthetic")[0]
    assert control.set("adaptation_mode", "full")[0]
    assert control.set("learning_rate", "1.0")[0]
    for index in range(6):
        stamp, disparity = process_pair(setup, index % 4)
    values = status(setup)
    for _ in range(3):  # ~/status comes at 1 Hz and may predate the last frames
        if int(values["collapse_resets"]) >= 1:
            break
        values = status(setup)
    assert int(values["collapse_resets"]) >= 1, setup["node"].log()
    assert int(values["reference_checks"]) >= 1  # the default frozen-reference check ran
    assert values["level"] == "1" and "last collapse reset" in values["message"]
    # One line per reset (a collapse or a lost reference check), the adapter's, in the node's
    # ROS log format: not a second copy from the node.
    def resets_logged():
        return len(re.findall(r"\[(?:WARN|INFO)\] \[[\d.]+\] \[stereo_adapt\]: .*: back to the "
                              r"initial weights", setup["node"].log()))
    for _ in range(3):
        if resets_logged() == int(values["collapse_resets"]):
            break
        values = status(setup)
    assert resets_logged() == int(values["collapse_resets"]), setup["node"].log()
    assert control.set("learning_rate", "1e-4")[0]
    assert control.set("weights", str(setup["initial"]))[0]


def test_a_failed_save_is_refused_and_logged(setup):
    """The caller gets the reason, and the node's log says it too."""
    control = setup["client"].control
    unwritable = setup["initial"] / "adapted.safetensors"  # under a file, not a folder
    assert control.set("save_path", str(unwritable))[0]
    try:
        ok, message = control.trigger("save_weights")
        assert not ok and message, message
        assert setup["client"].wait(
            lambda: f"cannot save the adapted weights to {unwritable}" in setup["node"].log(),
            10), setup["node"].log()
    finally:
        assert control.set("save_path", str(setup["folder"] / "saved.safetensors"))[0]


def test_invalid_parameter_values_are_refused_with_a_reason(setup, tmp_path):
    control = setup["client"].control
    mode_before = control.get("adaptation_mode").string_value
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    listed = with_metadata(save_weights(tmp_path / "listed.safetensors", read_weights(
        setup["initial"])[0], read_weights(setup["initial"])[1]), normalization="[0.5, 0.5]")
    extra = with_metadata(save_weights(tmp_path / "extra.safetensors", read_weights(
        setup["initial"])[0], read_weights(setup["initial"])[1]), extra='["a", "b"]')
    cases = {("adaptation_mode", "fast"): "must be one of",
             ("proxy_confidence", "magic"): "must be one of",
             ("learning_rate", "-1.0"): "learning_rate",
             ("input_scale", "0.0"): "input_scale",
             ("weights", str(broken)): "broken.safetensors",
             ("weights", "/no/such/file.safetensors"): "not found",
             ("weights", str(listed)): "normalization must be a JSON object",
             ("weights", str(extra)): "extra must be a JSON object",
             ("device", "cuda"): "read-only",
             ("adaptation_loss", "magic"): "must be one of",
             ("proxy_method", "sad"): "must be one of",
             ("proxy_weight", "0.0"): "proxy_weight",
             ("adapt_every_n", "0"): "adapt_every_n"}
    for (name, value), reason in cases.items():
        ok, message = control.set(name, value)
        assert not ok and reason in message, (name, value, message)
    assert control.get("adaptation_mode").string_value == mode_before
    assert setup["node"].alive()


def _tweak(**fields):
    def apply(left, right):
        for key, value in fields.items():
            setattr(left, key, value(left) if callable(value) else value)
    return apply


@pytest.mark.slow
def test_bad_input_is_dropped_with_a_reason_keeping_the_weights(setup):
    from sensor_msgs.msg import CameraInfo

    client, control = setup["client"], setup["client"].control
    assert control.set("adaptation_mode", "mad")[0]
    process_pair(setup, 0)
    before = saved_weights(setup, "bad_before.safetensors")
    rejected_before = int(status(setup)["rejected"])
    frame = setup["frames"][0]
    nan = np.full((96, 160), np.nan, dtype=np.float32)
    cases = [
        ("but right image is", dict(right_override=frame.right[:, :150].copy())),
        ("unsupported encoding", dict(tweak=_tweak(encoding="yuv422"))),
        ("too short", dict(tweak=_tweak(data=lambda m: bytes(m.data[:-100])))),
        ("smaller than one row", dict(tweak=_tweak(step=lambda m: m.step - 1))),
        ("NaN", dict(images=(nan, nan), encoding="32FC1")),
        ("all zeros", dict(left_info=CameraInfo(width=160, height=96))),
    ]
    for count, (reason, case) in enumerate(cases, start=1):
        left, right = case.pop("images", (frame.left, case.pop("right_override", frame.right)))
        stamp = next_stamp(setup)
        if "left_info" in case:
            case["left_info"].header.stamp.sec = stamp // 10**9
            case["left_info"].header.stamp.nanosec = stamp % 10**9
        client.publish(left, right, stamp, **case)
        assert client.wait(lambda: int(status(setup)["rejected"]) >= rejected_before + count,
                           30), (reason, setup["node"].log())
        assert stamp not in client.received["disparity"]
    log = setup["node"].log()
    for reason, _ in cases:
        assert reason in log, reason
    assert same(before, saved_weights(setup, "bad_after.safetensors"))
    assert setup["node"].alive()
    process_pair(setup, 1)


@pytest.mark.slow
def test_pairs_that_do_not_form_are_explained_in_the_log(setup):
    client, frame = setup["client"], setup["frames"][0]
    warnings = setup["node"].log().count("no synchronised stereo pair")
    stamp = next_stamp(setup)
    client.publish(frame.left, frame.right, stamp, send=("left", "right", "left_info"))
    assert client.wait(lambda: setup["node"].log().count("no synchronised stereo pair")
                       > warnings, 15)
    line = setup["node"].log().splitlines()[-1]
    assert "/right/camera_info" in line and "apart" in line

    warnings += 1
    stamp = next_stamp(setup)
    client.publish(frame.left, frame.right, stamp, right_stamp_ns=stamp + 3 * 10**9)
    assert client.wait(lambda: setup["node"].log().count("no synchronised stereo pair")
                       > warnings, 15)
    line = [x for x in setup["node"].log().splitlines() if "no synchronised" in x][-1]
    assert "3.0" in line and "approximate_sync" in line
    assert stamp not in client.received["disparity"]
    process_pair(setup, 2)


@pytest.mark.slow
def test_ctl_command_sets_parameters_and_reads_status(setup):
    env = loopback_env(setup["domain"])

    def ctl(*args):
        return subprocess.run([sys.executable, "-m", "stereo_adapt_ros", "ctl", *args],
                              env=env, capture_output=True, text=True, timeout=60)
    done = ctl("set", "adaptation_mode", "bogus")
    assert done.returncode == 1 and "refused" in done.stdout and "must be one of" in done.stdout
    done = ctl("set", "learning_rate", "0.0002")
    assert done.returncode == 0, done.stdout + done.stderr
    assert ctl("get", "learning_rate").stdout.strip() == "0.0002"
    assert ctl("set", "adaptation_mode", "full").returncode == 0
    done = ctl("status")
    assert done.returncode == 0 and "frames_out:" in done.stdout
    # Applied by the worker although no frame came since (post-set callback, Jazzy on).
    assert "mode: full" in done.stdout


@pytest.mark.slow
def test_approximate_sync_pairs_stamps_within_the_tolerance(tmp_path):
    domain = domain_for(29)
    node = NodeProcess(domain, {"weights": "random", "approximate_sync": True,
                                "approximate_sync_tolerance_seconds": 0.02},
                       tmp_path / "node.log")
    client = Client(domain)
    try:
        client.wait_for_node()
        frame = small_pan(1)[0]
        near = 1_800_000_000 * 10**9
        client.publish(frame.left, frame.right, near, right_stamp_ns=near + 5_000_000)
        assert client.wait(lambda: near in client.received["disparity"], OUTPUT_TIMEOUT_S), \
            node.log()
        values = client.control.status()
        assert (values["level"], values["message"].split(";")[0]) == ("0", "running"), values
        # A camera streaming views stamped 50 ms apart (kept streaming: a silent one is stale).
        far = near + 10**9
        for index in range(30):
            client.publish(frame.left, frame.right, far + index * 10**8,
                           right_stamp_ns=far + index * 10**8 + 50_000_000)
            if client.wait(lambda: "no synchronised stereo pair" in node.log(), 0.5):
                break
        assert "within 0.02 s" in node.log() and far not in client.received["disparity"]
        # ~/status says so too, with the reason, while the pairs do not form.
        far += 30 * 10**8
        client.publish(frame.left, frame.right, far, right_stamp_ns=far + 50_000_000)
        values = client.control.status()
        assert values["level"] == "1", values
        assert values["message"].startswith("no synchronised stereo pair for"), values
        assert "0.050000 s apart" in values["message"] and "within 0.02 s" in values["message"]
        # A pair that forms puts it back to OK.
        later = far + 10**9
        client.publish(frame.left, frame.right, later, right_stamp_ns=later + 1_000_000)
        assert client.wait(lambda: later in client.received["disparity"], OUTPUT_TIMEOUT_S)
        client.wait(lambda: False, 1.2)
        values = client.control.status()
        assert (values["level"], values["message"].split(";")[0]) == ("0", "running"), values
    finally:
        client.close()
        node.stop()


def _run_node_until_exit(domain: int, parameters: dict, log_path: Path) -> tuple[int, str]:
    node = NodeProcess(domain, parameters, log_path)
    try:
        node.process.wait(timeout=120)
    finally:
        code = node.stop()
    return code, node.log()


@pytest.mark.slow
def test_weights_with_bad_metadata_at_start_give_one_fatal_line(tmp_path):
    model, info, _ = load_model("random", seed=3)
    bad = with_metadata(save_weights(tmp_path / "bad.safetensors", model.state_dict(), info),
                        normalization="[0.5, 0.5, 0.5]")
    code, log = _run_node_until_exit(domain_for(31), {"weights": str(bad)},
                                     tmp_path / "node.log")
    assert code == 1, log
    lines = log.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[FATAL]"), log
    assert "cannot load weights" in lines[0] and "normalization must be a JSON object" in lines[0]


def _one_fatal_line(code: int, log: str) -> str:
    assert code == 1, log
    lines = log.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[FATAL]"), log
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("name, value, reason", [
    ("learning_rate", "5.0", "learning_rate must be in [1e-08, 1], got 5.0"),
    ("approximate_sync_tolerance_seconds", "-1",
     "approximate_sync_tolerance_seconds must be a float in [0, 10], got -1"),
    ("approximate_sync_tolerance_seconds", "100",
     "approximate_sync_tolerance_seconds must be a float in [0, 10], got 100"),
    ("approximate_sync_tolerance_seconds", "100.0",
     "approximate_sync_tolerance_seconds must be in [0, 10], got 100.0"),
    ("learning_rate", "1", "learning_rate must be a float in [1e-08, 1], got 1 (an integer "
                           "to ROS: write 1.0)"),
    ("qos_overrides./left/image_rect.subscription.depth", "abc",
     "qos_overrides./left/image_rect.subscription.depth must be an integer >= 0, got 'abc'"),
    ("qos_overrides./disparity.publisher.reliability", "sometimes",
     "qos_overrides./disparity.publisher.reliability must be one of system_default, "
     "reliable, best_effort, best_available, got 'sometimes'"),
    ("image_transport", "theora", "image_transport must be one of raw, compressed, got "
                                  "'theora'"),
    ("input_reliability", "sometimes", "input_reliability must be one of best_effort, "
                                       "reliable, got 'sometimes'"),
])
def test_a_bad_start_value_gives_one_fatal_line_with_the_parameter(tmp_path, name, value,
                                                                   reason):
    """Not a traceback, not silence, not advice about the weights: the parameter, the value
    and what it takes, and exit status 1."""
    code, log = _run_node_until_exit(domain_for(53), {"weights": "random", name: value},
                                     tmp_path / "node.log")
    line = _one_fatal_line(code, log)
    assert "cannot start: " + reason in line and "weights" not in line, line


@pytest.mark.slow
def test_a_start_value_for_an_experiment_setting_is_ignored_with_a_warning(tmp_path):
    """An old params file may still set a setting that left the node (issue 25): the node says
    it ignores it and where it went, and checks the rest as ever."""
    code, log = _run_node_until_exit(domain_for(79), {"weights": "random",
                                                      "proxy_scale": "0.5",
                                                      "input_reliability": "sometimes"},
                                     tmp_path / "node.log")
    assert code == 1, log
    warning, fatal = log.strip().splitlines()
    assert warning.startswith("[WARN]") and "proxy_scale is not a parameter" in warning, log
    assert "--proxy-scale" in warning and "ignored" in warning, log
    assert "cannot start: input_reliability must be one of" in fatal, log


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nan", "truncated"])
def test_an_unusable_learned_proxy_confidence_stops_the_start(tmp_path, monkeypatch, kind):
    """proxy_confidence learned (the default) with a file that does not load would leave
    every frame unadapted: the node refuses to start, naming the file and the problem."""
    from stereo_adapt_ros.network.proxy_confidence import (ProxyConfidenceNet,
                                                           save_proxy_confidence)
    network = ProxyConfidenceNet()
    if kind == "nan":
        with torch.no_grad():
            network.output.weight[0, 0] = float("nan")
    folder = tmp_path / "models"
    path = save_proxy_confidence(folder / "proxy_confidence.safetensors", network, "a test")
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    monkeypatch.setenv("STEREO_ADAPT_MODELS", str(folder))
    code, log = _run_node_until_exit(domain_for(59), {"weights": "random"},
                                     tmp_path / "node.log")
    line = _one_fatal_line(code, log)
    assert "proxy_confidence learned cannot run" in line and str(path) in line, line
    assert ("NaN" if kind == "nan" else "not a safetensors file") in line, line


def test_a_missing_python_dependency_is_one_line_not_a_traceback():
    """Without site-packages (python -S) nothing the node needs is installed."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    for args in (["-m", "stereo_adapt_ros", "node"],
                 ["-c", "import sys; from stereo_adapt_ros.cli.node_command import main; "
                        "sys.exit(main())"]):
        done = subprocess.run([sys.executable, "-S", *args], env=env, capture_output=True,
                              text=True, timeout=60, cwd=ROOT)
        lines = (done.stdout + done.stderr).strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stdout + done.stderr
        assert re.search(r"cannot start: the Python module '\w+' is not installed; pip install",
                         lines[0]), lines


@pytest.mark.slow
def test_sigint_with_a_frame_in_flight_finishes_it_and_shuts_down_cleanly(tmp_path):
    """The frame being processed when SIGINT comes is still published; no worker traceback
    ("publisher's context is invalid"), exit status 0."""
    domain = domain_for(37)
    node = NodeProcess(domain, {"weights": "random", "adaptation_mode": "full"},
                       tmp_path / "node.log")
    client = Client(domain)
    try:
        client.wait_for_node()
        small = small_pan(1)[0]
        client.publish(small.left, small.right, 1_700_000_000 * 10**9)  # warm-up
        assert client.wait(lambda: client.received["disparity"], OUTPUT_TIMEOUT_S), node.log()
        # 1480 x 992: a full step takes several seconds on a CPU, so the frame is still being
        # processed when ~/status (1 Hz) first counts it in.
        large = motorcycle_pan(1, crop_width=740, crop_height=496, scale=2.0)[0]
        stamp = 1_700_000_001 * 10**9
        client.publish(large.left, large.right, stamp)
        # The signal must come once the node has the pair; a fixed wait raced the transport of
        # two 4.4 MB images on a loaded machine (the pair arrived after the signal).
        values = client.control.status()
        deadline = time.monotonic() + OUTPUT_TIMEOUT_S
        while int(values["frames_in"]) < 2 and time.monotonic() < deadline:
            values = client.control.status()
        assert int(values["frames_in"]) == 2, values
        assert int(values["frames_out"]) == 1 and stamp not in client.received["disparity"], \
            f"the large frame was done before the signal; the test needs a slower one: {values}"
        node.process.send_signal(signal.SIGINT)
        assert client.wait(lambda: stamp in client.received["disparity"], OUTPUT_TIMEOUT_S), \
            node.log()
        assert node.process.wait(timeout=60) == 0, node.log()
    finally:
        client.close()
        node.stop()
    log = node.log()
    assert "finishing the frame in progress" in log, log
    for sign in ("Traceback", "context is invalid", "Exception in thread"):
        assert sign not in log, log


@pytest.mark.slow
def test_the_worker_survives_an_unexpected_error_and_keeps_the_weights(tmp_path):
    """Out of memory (an address-space limit put on the running node, as on a robot whose
    memory runs out) while a large frame is processed: the error is logged with its traceback,
    counted and shown in ~/status, the weights are kept and the next frame is processed."""
    domain = domain_for(43)
    folder = tmp_path
    # The photometric loss alone, so that no proxy thread races the network for the memory.
    node = NodeProcess(domain, {"weights": "random", "adaptation_mode": "full",
                                "adaptation_loss": "photometric",
                                "save_path": str(folder / "saved.safetensors")},
                       folder / "node.log")
    client = Client(domain)
    small = small_pan(1)[0]
    stamp = 1_700_000_000 * 10**9
    try:
        client.wait_for_node()
        client.publish(small.left, small.right, stamp)
        assert client.wait(lambda: stamp in client.received["disparity"], OUTPUT_TIMEOUT_S)
        assert client.control.trigger("save_weights")[0]
        before = read_weights(folder / "saved.safetensors")[0]

        status_file = Path(f"/proc/{node.process.pid}/status").read_text()
        in_use = int(re.search(r"VmSize:\s+(\d+) kB", status_file).group(1)) * 1024
        resource.prlimit(node.process.pid, resource.RLIMIT_AS,
                         (in_use + 300 * 2**20, resource.RLIM_INFINITY))
        large = motorcycle_pan(1, crop_width=740, crop_height=500, scale=1.7)[0]
        client.publish(large.left, large.right, stamp + 10**8)
        assert client.wait(lambda: "unexpected error" in node.log(), OUTPUT_TIMEOUT_S), \
            node.log()
        resource.prlimit(node.process.pid, resource.RLIMIT_AS,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        assert node.alive()
        values = client.control.status()
        for _ in range(3):  # ~/status comes at 1 Hz and may predate the error
            if values["errors"] != "0":
                break
            values = client.control.status()
        assert values["errors"] == "1" and values["level"] == "1", values
        # Which allocation fails first varies: torch's or oneDNN's (which says it could not
        # create a primitive); either way it is the memory limit, reported.
        assert ("allocate memory" in values["last_error"]
                or "could not create a primitive" in values["last_error"]), values
        assert "last unexpected error in the pair stamped" in values["message"], values
        assert client.control.trigger("save_weights")[0]
        assert same(before, read_weights(folder / "saved.safetensors")[0])

        stamp += 2 * 10**8
        client.publish(small.left, small.right, stamp)
        assert client.wait(lambda: stamp in client.received["disparity"], OUTPUT_TIMEOUT_S), \
            node.log()
    finally:
        client.close()
        node.stop()
    assert "DefaultCPUAllocator" in node.log() and "Traceback" in node.log()


def _status_named(array, name):
    return [s for s in array.status if s.name == name]


@pytest.mark.slow
def test_compressed_inputs_qos_overrides_and_diagnostics(tmp_path):
    """image_transport compressed: PNG CompressedImage pairs in; the standard qos_overrides
    parameters change the endpoints' QoS; the status also goes to /diagnostics; a pair that
    does not decode is dropped with the reason and its WARN clears after WARNING_HOLD_S."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header

    from stereo_adapt_ros.ros.node import WARNING_HOLD_S

    domain = domain_for(41)
    node = NodeProcess(domain, {
        "weights": "random", "adaptation_mode": "none", "image_transport": "compressed",
        "qos_overrides./left/image_rect/compressed.subscription.reliability": "reliable",
        "qos_overrides./confidence.publisher.reliability": "best_effort"},
        tmp_path / "node.log", ros_args=("-r", "right/image_rect:=/cam/right/image_rect"))
    client = Client(domain, outputs=("disparity",))
    diagnostics: list = []
    client.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    compressed = {side: client.node.create_publisher(CompressedImage, topic, QoSProfile(depth=10))
                  for side, topic in (("left", "/left/image_rect/compressed"),
                                      ("right", "/cam/right/image_rect/compressed"))}

    def publish(frame, stamp, right_data=None):
        client.publish(frame.left, frame.right, stamp, send=("left_info", "right_info"))
        header = Header(frame_id="cam_left")
        header.stamp.sec, header.stamp.nanosec = stamp // 10**9, stamp % 10**9
        left = compressed_image_msg(frame.left, header, ".png")
        right = compressed_image_msg(frame.right, header, ".jpg")
        if right_data is not None:
            right.data = right_data
        compressed["left"].publish(left)
        compressed["right"].publish(right)

    try:
        assert client.wait(lambda: all(p.get_subscription_count() for p in compressed.values())
                           and client.node.count_publishers("/disparity") > 0, 60), node.log()
        client.wait(lambda: False, 0.5)
        frames = small_pan(2)
        stamp = 1_900_000_000 * 10**9
        publish(frames[0], stamp)
        assert client.wait(lambda: stamp in client.received["disparity"], OUTPUT_TIMEOUT_S), \
            node.log()
        message = client.received["disparity"][stamp]
        assert (message.image.height, message.image.width) == (96, 160)
        assert message.header.frame_id == "cam_left"
        # The overrides took effect on the node's endpoints (others keep their defaults).
        reliability = {topic: [info.qos_profile.reliability for info in
                               client.node.get_subscriptions_info_by_topic(topic)
                               if info.node_name == "stereo_adapt"]
                       for topic in ("/left/image_rect/compressed",
                                     "/cam/right/image_rect/compressed")}
        assert reliability == {"/left/image_rect/compressed": [ReliabilityPolicy.RELIABLE],
                               "/cam/right/image_rect/compressed": [
                                   ReliabilityPolicy.BEST_EFFORT]}
        confidence, = [info for info in client.node.get_publishers_info_by_topic("/confidence")]
        assert confidence.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        disparity, = [info for info in client.node.get_publishers_info_by_topic("/disparity")]
        assert disparity.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        # The status on /diagnostics, named after the node.
        assert client.wait(lambda: any(_status_named(a, "/stereo_adapt: status")
                                       for a in diagnostics), 10)
        status, = _status_named(diagnostics[-1], "/stereo_adapt: status")
        assert status.level == b"\x00" and status.message == "running"
        # A right image that is not an image: dropped with the reason, WARN, then OK again.
        bad = stamp + 10**8
        publish(frames[1], bad, right_data=b"\x89PNG not really")
        assert client.wait(lambda: client.control.status()["level"] == "1", 30), node.log()
        values = client.control.status()
        assert values["rejected"] == "1" and "cannot decode image" in values["last_rejection"]
        assert "right image" in values["message"]
        status, = _status_named(diagnostics[-1], "/stereo_adapt: status")
        assert status.level == b"\x01"
        good = bad + 10**8
        publish(frames[1], good)
        assert client.wait(lambda: good in client.received["disparity"], OUTPUT_TIMEOUT_S)

        def streaming_and_ok():  # a camera that stopped would be stale
            nonlocal good
            good += 10**8
            publish(frames[1], good)
            return client.control.status()["level"] == "0"
        assert client.wait(streaming_and_ok, WARNING_HOLD_S + 10), node.log()
        values = client.control.status()
        assert values["message"] == "running" and "cannot decode" in values["last_rejection"]
        assert node.alive()
    finally:
        client.close()
        node.stop()


@pytest.mark.slow
def test_corrupt_and_huge_compressed_images_are_rejected_quietly_with_the_reason(tmp_path):
    """A PNG whose header claims 50000 x 50000 is a rejected pair with the reason (not an
    unexpected error with a traceback); corrupt PNGs and JPEGs are rejected, logged throttled,
    and nothing else is printed (no libpng / libjpeg line per image); good pairs go on."""
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header
    from test_data_io import _png_declaring

    domain = domain_for(61)
    node = NodeProcess(domain, {"weights": "random", "adaptation_mode": "none",
                                "image_transport": "compressed"}, tmp_path / "node.log")
    client = Client(domain, outputs=("disparity",))
    compressed = {side: client.node.create_publisher(CompressedImage,
                                                     f"/{side}/image_rect/compressed",
                                                     QoSProfile(depth=10))
                  for side in ("left", "right")}
    frame = small_pan(1)[0]
    rng = np.random.default_rng(5)

    def publish(stamp, extension=".png", corrupt=None):
        client.publish(frame.left, frame.right, stamp, send=("left_info", "right_info"))
        header = Header(frame_id="cam_left")
        header.stamp.sec, header.stamp.nanosec = stamp // 10**9, stamp % 10**9
        right = compressed_image_msg(frame.right, header, extension)
        if corrupt is not None:
            right.data = corrupt(bytes(right.data))
        compressed["left"].publish(compressed_image_msg(frame.left, header, ".png"))
        compressed["right"].publish(right)

    def rejected():
        return int(client.control.status()["rejected"])

    try:
        assert client.wait(lambda: all(p.get_subscription_count() for p in compressed.values())
                           and client.node.count_publishers("/disparity") > 0, 60), node.log()
        client.wait(lambda: False, 0.5)
        stamp = 1_900_000_000 * 10**9
        publish(stamp, corrupt=lambda data: _png_declaring(50000, 50000))
        assert client.wait(lambda: rejected() == 1, 30), node.log()
        values = client.control.status()
        assert "declares more pixels than" in values["last_rejection"], values
        assert values["errors"] == "0", values
        for index in range(6):
            stamp += 10**8
            publish(stamp, (".png", ".jpg")[index % 2],
                    corrupt=lambda data: data[:60] + rng.bytes(200) + data[260:])
            assert client.wait(lambda i=index: rejected() == i + 2, 30), node.log()
        stamp += 10**8
        publish(stamp)
        assert client.wait(lambda: stamp in client.received["disparity"], OUTPUT_TIMEOUT_S), \
            node.log()
        assert client.control.status()["errors"] == "0"
    finally:
        client.close()
        node.stop()
    log = node.log()
    for sign in ("libpng", "Corrupt JPEG", "unexpected error", "Traceback"):
        assert sign not in log, log
    assert 1 <= log.count("dropped the pair") <= 3, log


@pytest.mark.slow
def test_status_health_under_sim_time_a_lost_image_and_a_stopped_camera(tmp_path):
    """Stamps of a recording under use_sim_time: no latency against the wall clock (it would
    read days), the time from receipt instead; status stamps keep moving on the system clock
    when /clock stops; a lost right image clears once pairs form again; a camera that stops
    (even on an unpaired image) turns the status stale, WARN "no input for N s", with the
    output frequency falling to 0 and its own status on /diagnostics."""
    import time

    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from rosgraph_msgs.msg import Clock

    from stereo_adapt_ros.ros.node import STALE_INPUT_S

    domain = domain_for(67)
    node = NodeProcess(domain, {"weights": "random", "adaptation_mode": "none",
                                "use_sim_time": True}, tmp_path / "node.log")
    client = Client(domain)
    clock = client.node.create_publisher(Clock, "/clock", 10)
    statuses: list = []
    client.node.create_subscription(DiagnosticArray, "/stereo_adapt/status", statuses.append, 10)
    diagnostics: list = []
    client.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    frame = small_pan(1)[0]
    recorded = 1_000 * 10**9  # a recording's stamps, far from the wall clock

    def pair(stamp, **kwargs):
        clock.publish(Clock(clock=Time(sec=stamp // 10**9, nanosec=stamp % 10**9)))
        client.publish(frame.left, frame.right, stamp, **kwargs)

    def latest():
        array = statuses[-1]
        return array, {v.key: v.value for v in array.status[0].values}

    try:
        client.wait_for_node()
        for index in range(3):
            stamp = recorded + index * 10**8
            pair(stamp)
            assert client.wait(lambda s=stamp: s in client.received["disparity"],
                               OUTPUT_TIMEOUT_S), node.log()
        # One right image lost; the pairs after it form, and the status is OK again.
        lost = recorded + 3 * 10**8
        pair(lost, send=("left", "left_info", "right_info"))
        for index in range(4, 7):
            stamp = recorded + index * 10**8
            pair(stamp)
            assert client.wait(lambda s=stamp: s in client.received["disparity"],
                               OUTPUT_TIMEOUT_S), node.log()
        statuses.clear()
        assert client.wait(lambda: len(statuses) >= 3, 10)
        array, values = latest()
        assert array.status[0].message == "running", (array.status[0], node.log())
        assert "latency_ms" not in values, values
        assert 0 < float(values["receive_to_output_ms"]) < 60_000, values
        assert float(values["fps"]) > 0, values
        # Stamped on the system clock, moving although /clock stopped at the recording's time.
        stamps = [a.header.stamp.sec + a.header.stamp.nanosec / 1e9 for a in statuses[-3:]]
        assert stamps[0] < stamps[1] < stamps[2] and abs(stamps[2] - time.time()) < 5, stamps
        # The camera stops on an unpaired left image: stale, not a pair that does not form.
        pair(recorded + 7 * 10**8, send=("left", "left_info", "right_info"))
        client.wait(lambda: False, STALE_INPUT_S + 1.5)
        statuses.clear()
        assert client.wait(lambda: len(statuses) >= 1, 10)
        array, values = latest()
        status = array.status[0]
        assert status.level == b"\x01" and status.message.startswith("no input for "), status
        assert "no synchronised stereo pair" not in status.message, status
        assert float(values["fps"]) == 0, values
        assert client.wait(lambda: diagnostics, 5)
        frequency, = _status_named(diagnostics[-1], "/stereo_adapt: output frequency")
        assert frequency.level == b"\x01" and frequency.message.startswith("no output"), \
            frequency
    finally:
        client.close()
        node.stop()


@pytest.mark.slow
def test_lazy_processing_masking_and_unbounded_approximate_sync(tmp_path):
    """process_only_while_subscribed: while nothing subscribes to an output the node does not
    subscribe to its inputs (lazy subscription, issue 24 item 11), and subscribes again when
    something does; mask_low_confidence invalidates disparity below confidence_threshold;
    approximate_sync_tolerance_seconds 0 pairs stamps however far apart (stereo_image_proc's
    meaning)."""
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CameraInfo, Image
    from stereo_msgs.msg import DisparityImage

    domain = domain_for(43)
    node = NodeProcess(domain, {"weights": "random", "adaptation_mode": "none",
                                "process_only_while_subscribed": True,
                                "mask_low_confidence": True, "approximate_sync": True,
                                "approximate_sync_tolerance_seconds": 0.0},
                       tmp_path / "node.log")
    client = Client(domain, outputs=())
    frame = small_pan(1)[0]

    def inputs_subscribed():
        """How many subscribers the inputs have (the node's), from the test's publishers."""
        return {publisher.get_subscription_count() for publisher in client.pub.values()}

    try:
        assert client.wait(lambda: client.node.count_publishers("/disparity"), 60), node.log()
        values = client.control.status()
        assert values["level"] == "0", values
        assert values["message"] == ("idle: no subscriber to any output "
                                     "(process_only_while_subscribed): inputs unsubscribed")
        assert inputs_subscribed() == {0}
        stamp = 2_000_000_000 * 10**9
        # Someone subscribes: the inputs are subscribed and pairs processed (0.4 s apart,
        # paired all the same).
        received: dict[str, dict[int, object]] = {"disparity": {}, "confidence": {}}
        subscriptions = []

        def subscribe(topic, kind):
            subscriptions.append(client.node.create_subscription(
                kind, topic, lambda m: received[topic].__setitem__(
                    m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, m),
                QoSProfile(depth=10)))

        # Disparity only: the confidence map is neither computed nor published, and the
        # disparity is what it is with the confidence (checked below). A camera_info alone
        # brings neither it nor its image.
        subscribe("disparity", DisparityImage)
        for info_topic in ("confidence/camera_info", "depth/camera_info"):
            received[info_topic] = {}
            subscribe(info_topic, CameraInfo)
        assert client.wait(lambda: inputs_subscribed() == {1}, 10), node.log()
        client.wait(lambda: False, 0.5)
        alone = stamp + 10**8
        client.publish(frame.left, frame.right, alone, right_stamp_ns=alone + 400_000_000)
        assert client.wait(lambda: alone in received["disparity"], OUTPUT_TIMEOUT_S), node.log()
        alone_msg = received["disparity"][alone]
        client.wait(lambda: False, 1)
        assert not received["confidence/camera_info"] and not received["depth/camera_info"]
        alone_values = decode_image(alone_msg.image.data, 96, 160, "32FC1",
                                    alone_msg.image.step, 0)
        subscribe("confidence", Image)

        def outputs(at):
            client.publish(frame.left, frame.right, at, right_stamp_ns=at + 400_000_000)
            assert client.wait(lambda: all(at in received[t] for t in (
                "disparity", "confidence", "confidence/camera_info")), OUTPUT_TIMEOUT_S), \
                node.log()
            assert received["confidence/camera_info"][at].header == \
                received["confidence"][at].header
            disparity = received["disparity"][at]
            values = decode_image(disparity.image.data, 96, 160, "32FC1",
                                  disparity.image.step, 0)
            confidence = received["confidence"][at]
            return (values >= disparity.min_disparity,
                    decode_image(confidence.data, 96, 160, "32FC1", confidence.step, 0))

        assert client.wait(lambda: client.node.count_subscribers("/confidence") > 0, 10)
        client.wait(lambda: False, 0.5)
        valid, confidence = outputs(stamp + 10**9)
        assert valid.mean() > 0.5  # threshold 0: masking changes nothing yet
        np.testing.assert_array_equal(alone_values >= alone_msg.min_disparity, valid)
        assert alone not in received["confidence"]
        threshold = float(np.median(confidence[valid]))
        assert client.control.set("confidence_threshold", str(threshold))[0]
        masked, confidence2 = outputs(stamp + 2 * 10**9)
        np.testing.assert_array_equal(confidence2, confidence)  # no adaptation: same output
        np.testing.assert_array_equal(masked, valid & (confidence >= threshold))
        assert 0 < masked.sum() < valid.sum()
        assert not received["depth/camera_info"]  # nobody subscribes to depth

        # The subscribers go: so do the inputs; one comes back: so do they.
        for subscription in subscriptions:
            client.node.destroy_subscription(subscription)
        assert client.wait(lambda: inputs_subscribed() == {0}, 10), node.log()
        # The node logs it just after the unsubscription, which DDS may show first.
        assert client.wait(lambda: "no subscriber to any output: inputs unsubscribed"
                           in node.log(), 10), node.log()
        subscribe("disparity", DisparityImage)
        assert client.wait(lambda: inputs_subscribed() == {1}, 10), node.log()
        client.wait(lambda: False, 0.5)
        again = stamp + 3 * 10**9
        client.publish(frame.left, frame.right, again, right_stamp_ns=again + 400_000_000)
        assert client.wait(lambda: again in received["disparity"], OUTPUT_TIMEOUT_S), node.log()
        assert client.control.status()["unsubscribed"] == "0"
    finally:
        client.close()
        node.stop()


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
def test_idle_adaptation_is_bounded_resumes_and_waits_for_a_subscriber(tmp_path):
    """Idle adaptation (issue 24 item 5) takes at most idle_steps_per_pair steps after each
    pair, so it stops when the input stops; a pause holds the budget and a resume goes on with
    it without a new pair; with process_only_while_subscribed, no idle step (and no busy core)
    while nothing subscribes, and steps again once something does. At --log-level debug the
    log says what each frame and idle step did."""
    from rclpy.qos import QoSProfile
    from stereo_msgs.msg import DisparityImage

    domain = domain_for(47)
    node = NodeProcess(domain, {"weights": "random", "adaptation_mode": "full",
                                "learning_rate": 1e-5, "idle_adaptation": True,
                                "idle_steps_per_pair": 3,
                                "process_only_while_subscribed": True},
                       tmp_path / "node.log", ros_args=("--log-level", "stereo_adapt:=debug"))
    client = Client(domain, outputs=())
    frames = small_pan(2)
    received: dict[int, object] = {}

    def subscribe():
        return client.node.create_subscription(
            DisparityImage, "disparity", lambda m: received.__setitem__(
                m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, m), QoSProfile(depth=10))

    def publish(index, stamp):
        client.publish(frames[index].left, frames[index].right, stamp)
        assert client.wait(lambda: stamp in received, OUTPUT_TIMEOUT_S), node.log()

    def idle_steps():
        return int(client.control.status()["idle_steps"])

    subscription = subscribe()
    try:
        assert client.wait(lambda: client.pub["right/camera_info"].get_subscription_count()
                           and client.node.count_publishers("/disparity"), 60), node.log()
        client.wait(lambda: False, 0.5)
        stamp = 2_100_000_000 * 10**9
        publish(0, stamp)
        assert client.wait(lambda: idle_steps() >= 3, 60), node.log()
        client.wait(lambda: False, 3)
        values = client.control.status()
        assert values["idle_steps"] == "3", "idle steps went on past idle_steps_per_pair"
        assert values["idle_steps_left"] == "0"

        # Nobody subscribes: no idle step, the node idles; someone subscribes: steps again.
        assert client.control.set("idle_steps_per_pair", "100000")[0]
        publish(1, stamp + 10**8)
        assert client.wait(lambda: idle_steps() > 3, 30), node.log()
        client.node.destroy_subscription(subscription)
        # The node sees that nobody listens: it unsubscribes from its inputs.
        assert client.wait(lambda: client.pub["left/image_rect"].get_subscription_count() == 0,
                           10), node.log()
        client.wait(lambda: False, 1)
        before, cpu = idle_steps(), _cpu_seconds(node.process.pid)
        client.wait(lambda: False, 4)
        assert idle_steps() == before, "idle steps while nothing subscribes"
        assert _cpu_seconds(node.process.pid) - cpu < 1.2, "over 0.3 cores busy while idle"
        subscription = subscribe()
        assert client.wait(lambda: idle_steps() > before, 30), node.log()
        assert client.wait(lambda: client.pub["left/image_rect"].get_subscription_count() == 1,
                           10), node.log()
        client.wait(lambda: False, 0.5)

        # Paused, a pair renews the budget but no step spends it; resumed, the steps come back
        # on the kept recent pairs with no new pair.
        assert client.control.pause(True)[0]
        publish(1, stamp + 3 * 10**8)
        paused = idle_steps()
        client.wait(lambda: False, 2)
        assert idle_steps() == paused
        assert client.control.pause(False)[0]
        assert client.wait(lambda: idle_steps() > paused, 30), node.log()

        log = node.log()
        assert f"frame {stamp / 1e9:.6f}: adapted (full)" in log, log
        assert f"frame {(stamp + 3 * 10**8) / 1e9:.6f}: not adapted: paused" in log, log
        assert "idle step on a recent pair: adapted (full)" in log, log
        assert re.search(r"reference check: the (initial weights'|adapted) prediction "
                         r"published, loss [\d.e+-]+, node [\d.]+ ms, queue wait [\d.-]+ ms, "
                         r"prepare [\d.]+ ms", log), log
    finally:
        client.close()
        node.stop()
