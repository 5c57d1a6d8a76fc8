"""Helpers for tests that run the node in a subprocess and talk to it from this process with
real rclpy over DDS kept on loopback (see config/fastdds_loopback.xml)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stereo_adapt_ros.data import motorcycle_pan

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "config" / "fastdds_loopback.xml"
LOOPBACK = {
    "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    "FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE),
    "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
}


def domain_for(offset: int) -> int:
    """A domain (1-100) for one test module of this run, not the one the caller uses."""
    caller = os.environ.get("ROS_DOMAIN_ID", "")
    domain = (os.getpid() + offset) % 100 + 1
    return domain % 100 + 1 if str(domain) == caller else domain


def use_loopback_here() -> None:
    """This process's own DDS participants stay on loopback too."""
    os.environ.update(LOOPBACK)


def loopback_env(domain: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LOOPBACK, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return env


def compressed_image_msg(image, header, extension: str = ".png"):
    """Encode uint8 RGB H x W x 3 (or grey H x W) as compressed_image_transport does (what a
    camera's compressed topic carries): the file bytes in ``data`` and ``format``
    "<encoding>; <png|jpeg> compressed <bgr8|mono8>"."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    colour = image.ndim == 3
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if colour else image
    ok, encoded = cv2.imencode(extension, pixels)
    if not ok:
        raise ValueError(f"OpenCV cannot encode {extension}")
    kind = "jpeg" if extension.lower() in (".jpg", ".jpeg") else extension.lstrip(".").lower()
    message = CompressedImage(header=header, data=encoded.tobytes())
    message.format = (f"{'rgb8' if colour else 'mono8'}; {kind} compressed "
                      f"{'bgr8' if colour else 'mono8'}")
    return message


def small_pan(frames: int = 4):
    """Real Motorcycle frames, 96 x 160 (a 192 x 320 window halved), with ground truth."""
    return motorcycle_pan(num_frames=frames, crop_width=320, crop_height=192, scale=0.5)


class NodeProcess:
    """``stereo-adapt node`` in a subprocess (with ``lifecycle``, ``stereo-adapt node
    --lifecycle``), its log in ``log_path``."""

    def __init__(self, domain: int, parameters: dict[str, object], log_path: Path,
                 ros_args: tuple[str, ...] = (), lifecycle: bool = False) -> None:
        args = [sys.executable, "-m", "stereo_adapt_ros", "node",
                *(["--lifecycle"] if lifecycle else []), "--ros-args", *ros_args]
        for name, value in {"num_threads": 1, **parameters}.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            args += ["-p", f"{name}:={text}"]
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(args, env=loopback_env(domain), stdout=self._log,
                                        stderr=subprocess.STDOUT, cwd=ROOT)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def wait_until(predicate, timeout: float, spin=None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if spin is not None:
            spin()
        else:
            time.sleep(0.05)
    return predicate()


class Client:
    """This process's side: publishes stereo inputs, collects the node's outputs by stamp,
    and controls the node through ``stereo_adapt_ros.ros.ctl.Controller``."""

    OUTPUTS = {"disparity": "DisparityImage", "confidence": "Image", "disparity/color": "Image",
               "points2": "PointCloud2", "depth": "Image",
               "confidence/camera_info": "CameraInfo",
               "disparity/color/camera_info": "CameraInfo", "depth/camera_info": "CameraInfo"}

    def __init__(self, domain: int, outputs=("disparity", "confidence")) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from stereo_msgs.msg import DisparityImage

        from stereo_adapt_ros.ros.ctl import Controller

        use_loopback_here()
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("stereo_adapt_test_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        qos = QoSProfile(depth=10)
        self.pub = {name: self.node.create_publisher(kind, name, qos) for name, kind in (
            ("left/image_rect", Image), ("right/image_rect", Image),
            ("left/camera_info", CameraInfo), ("right/camera_info", CameraInfo))}
        kinds = {"DisparityImage": DisparityImage, "Image": Image, "PointCloud2": PointCloud2,
                 "CameraInfo": CameraInfo}
        self.received: dict[str, dict[int, object]] = {name: {} for name in outputs}
        for name in outputs:
            self.node.create_subscription(
                kinds[self.OUTPUTS[name]], name,
                lambda msg, n=name: self.received[n].__setitem__(_stamp(msg), msg), qos)
        self.control = Controller(self.node, "/stereo_adapt", timeout=30.0,
                                  executor=self.executor)

    def spin(self, seconds: float = 0.02) -> None:
        self.executor.spin_once(timeout_sec=seconds)

    def wait(self, predicate, timeout: float) -> bool:
        return wait_until(predicate, timeout, self.spin)

    def wait_for_node(self, timeout: float = 60.0) -> None:
        def ready():
            return (self.pub["left/image_rect"].get_subscription_count() > 0
                    and self.pub["right/camera_info"].get_subscription_count() > 0
                    and self.node.count_publishers("/disparity") > 0)
        assert self.wait(ready, timeout), "the node did not come up"
        self.wait(lambda: False, 0.5)

    def publish(self, left, right, stamp_ns: int, *, frame_id: str = "cam_left",
                encoding: str = "rgb8", camera=None, left_info=None, right_info=None,
                right_stamp_ns: int | None = None, send=("left", "right", "left_info",
                                                         "right_info"), tweak=None) -> None:
        """Publish one pair (arrays already in ``encoding``'s layout) with camera_info;
        ``tweak(left_msg, right_msg)`` may corrupt the messages before they go out."""
        from builtin_interfaces.msg import Time
        from std_msgs.msg import Header

        from stereo_adapt_ros.data.stereo_camera import StereoCamera
        from stereo_adapt_ros.ros.conversion import camera_info_msgs, image_msg

        def header(ns):
            return Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id=frame_id)
        left_msg = image_msg(left, encoding, header(stamp_ns))
        right_msg = image_msg(right, encoding, header(right_stamp_ns or stamp_ns))
        if tweak is not None:
            tweak(left_msg, right_msg)
        camera = camera or StereoCamera(200.0, 200.0, 80.0, 48.0, 0.12)
        infos = camera_info_msgs(camera, left.shape[0], left.shape[1], header(stamp_ns))
        messages = {"left": left_msg, "right": right_msg,
                    "left_info": left_info or infos[0], "right_info": right_info or infos[1]}
        topics = {"left": "left/image_rect", "right": "right/image_rect",
                  "left_info": "left/camera_info", "right_info": "right/camera_info"}
        for part in ("left_info", "right_info", "left", "right"):
            if part in send:
                self.pub[topics[part]].publish(messages[part])

    def close(self) -> None:
        import rclpy
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _stamp(message) -> int:
    return message.header.stamp.sec * 10**9 + message.header.stamp.nanosec
