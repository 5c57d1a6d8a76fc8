"""One line instead of a traceback when a Python module a command needs is not installed."""

from __future__ import annotations

#: ROS 2 Python packages this project imports (from a ROS install, or the ros-* wheels).
ROS_MODULES = frozenset({
    "rclpy", "rcl_interfaces", "builtin_interfaces", "std_msgs", "std_srvs", "sensor_msgs",
    "stereo_msgs", "diagnostic_msgs", "rosgraph_msgs", "message_filters", "cv_bridge",
    "ament_index_python", "launch", "launch_ros", "lifecycle_msgs",
})
#: pip's name where it is not the module's.
PIP_NAMES = {"cv2": "opencv-python-headless", "skimage": "scikit-image", "yaml": "pyyaml"}


def missing_module_line(error: ModuleNotFoundError, program: str) -> str | None:
    """What to install for ``error``, as one line; None when the missing module is this
    package's own (a bug, whose traceback is wanted)."""
    name = (error.name or "").partition(".")[0]
    if not name or name == "stereo_adapt_ros":
        return None
    if name == "torch":
        how = ("install the torch build for this machine first (the CPU wheel, your CUDA build "
               "or NVIDIA's Jetson wheel; see the README)")
    elif name in ROS_MODULES:
        how = (f"source your ROS 2 installation (. /opt/ros/<distro>/setup.bash), or where "
               f"there is none pip install ros-{name.replace('_', '-')}")
    else:
        how = f"pip install {PIP_NAMES.get(name, name)}"
    return f"{program}: cannot start: the Python module {name!r} is not installed; {how}"
