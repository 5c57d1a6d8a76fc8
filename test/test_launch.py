"""The launch file, where launch and launch_ros are installed (a ROS install; skipped where only
the PyPI wheels exist): the node and rviz land in the namespace given, so that rviz's relative
topics are the node's outputs; rviz is optional and takes its fixed frame from the launch; the
node's failure to start ends the launch."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def launch_file(tmp_path, monkeypatch):
    pytest.importorskip("launch_ros", reason="no launch_ros here (it comes with a ROS install)")
    # The launch file finds its config through the ament index: a prefix with this package
    # (and rviz2, which a test may remove).
    prefix = tmp_path / "prefix"
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "stereo_adapt_ros").write_text("")
    (index / "rviz2").write_text("")
    (prefix / "share" / "stereo_adapt_ros").mkdir()
    (prefix / "share" / "stereo_adapt_ros" / "config").symlink_to(ROOT / "config")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    spec = importlib.util.spec_from_file_location("stereo_adapt_launch",
                                                  ROOT / "launch" / "stereo_adapt.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _actions(description, context):
    """The actions of ``description`` with its OpaqueFunctions executed (the node and rviz
    come out of them)."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    actions = []
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            entity.execute(context)
        elif isinstance(entity, OpaqueFunction):
            actions += entity.execute(context) or []
        else:
            actions.append(entity)
    return actions


def _nodes(description, context):
    """The launch_ros Nodes of ``description``."""
    from launch_ros.actions import Node
    return [a for a in _actions(description, context) if isinstance(a, Node)]


@pytest.mark.parametrize("namespace, expected", [("stereo", "/stereo"), ("", "/")])
def test_node_and_rviz_run_in_the_namespace(launch_file, namespace, expected):
    from launch import LaunchContext

    context = LaunchContext()
    context.launch_configurations.update(namespace=namespace, rviz="true")
    description = launch_file.generate_launch_description()
    nodes = {node.node_executable: node for node in _nodes(description, context)}
    assert set(nodes) == {"stereo_adapt_node", "rviz2"}
    for node in nodes.values():
        node._perform_substitutions(context)  # what executing the action does first
        assert node.expanded_node_namespace == expected
    rviz_config = (ROOT / "config" / "stereo_adapt.rviz").read_text()
    assert "Value: /" not in rviz_config, "rviz topics must stay relative to the namespace"


def test_rviz_is_optional_and_its_fixed_frame_a_launch_argument(launch_file, tmp_path):
    from launch import LaunchContext
    from launch.actions import LogInfo

    shipped = (ROOT / "config" / "stereo_adapt.rviz").read_text()
    context = LaunchContext()
    context.launch_configurations.update(rviz="true", fixed_frame="camera_link")
    rviz, = [n for n in _nodes(launch_file.generate_launch_description(), context)
             if n.node_executable == "rviz2"]
    option, path = ["".join(s.perform(context) for s in part) for part in rviz.cmd[1:3]]
    assert option == "-d"
    written = Path(path).read_text()
    assert "    Fixed Frame: camera_link\n" in written
    assert written == launch_file.rviz_config(shipped, "camera_link")
    assert written.replace("camera_link", "stereo_left_optical_frame", 1) == shipped
    # Without rviz:=true, and with rviz:=true where rviz2 is not installed: the node alone.
    for value in ("false", "true"):
        if value == "true":
            index = Path(os.environ["AMENT_PREFIX_PATH"]) / "share" / "ament_index"
            (index / "resource_index" / "packages" / "rviz2").unlink()
        context = LaunchContext()
        context.launch_configurations.update(rviz=value)
        actions = _actions(launch_file.generate_launch_description(), context)
        assert [n.node_executable for n in _nodes(launch_file.generate_launch_description(),
                                                  context)] == ["stereo_adapt_node"]
        said = [a for a in actions if isinstance(a, LogInfo)]
        assert bool(said) == (value == "true"), said


def test_the_node_failing_to_start_ends_the_launch(launch_file, tmp_path, monkeypatch, capfd):
    """ros2 launch ... weights:=missing.safetensors: the node exits 1 with its FATAL line, and
    the launch ends, stopping what else it runs (here a long sleep standing for rviz)."""
    import time

    import launch.logging
    from launch import LaunchDescription, LaunchService
    from launch.actions import ExecuteProcess, IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from ros_harness import LOOPBACK, domain_for

    # The executable where ros2 run finds it in an install: <prefix>/lib/stereo_adapt_ros.
    prefix = Path(os.environ["AMENT_PREFIX_PATH"])
    executable = prefix / "lib" / "stereo_adapt_ros" / "stereo_adapt_node"
    executable.parent.mkdir(parents=True)
    executable.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT / 'src'} exec {sys.executable} -c "
                          "'import sys; from stereo_adapt_ros.cli.node_command import main; "
                          "sys.exit(main())' \"$@\"\n")
    executable.chmod(0o755)
    for name, value in {**LOOPBACK, "ROS_DOMAIN_ID": str(domain_for(73))}.items():
        monkeypatch.setenv(name, value)
    missing = tmp_path / "missing.safetensors"
    launch.logging.reset()  # its screen handler writes to the sys.stdout of its first use
    service = LaunchService()
    service.include_launch_description(LaunchDescription([
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(ROOT / "launch" / "stereo_adapt.launch.py")),
            launch_arguments={"weights": str(missing)}.items()),
        ExecuteProcess(cmd=["sleep", "300"], output="screen")]))
    start = time.monotonic()
    service.run()
    assert time.monotonic() - start < 120
    out = "".join(capfd.readouterr())
    assert "[FATAL]" in out and f"cannot load weights {str(missing)!r}" in out, out
    assert "stereo_adapt_node exited with status 1" in out and "ending the launch" in out, out


def test_lifecycle_starts_the_lifecycle_node_and_autostart_configures_then_activates(
        launch_file):
    """lifecycle:=true: stereo_adapt_lifecycle_node as a launch_ros LifecycleNode, left to a
    lifecycle manager; with autostart:=true the launch asks for configure at once and for
    activate once the node is inactive after configuring."""
    from launch import LaunchContext
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch_ros.actions import LifecycleNode
    from lifecycle_msgs.msg import Transition

    for autostart in ("false", "true"):
        context = LaunchContext()
        context.launch_configurations.update(lifecycle="true", autostart=autostart)
        actions = _actions(launch_file.generate_launch_description(), context)
        node, = [a for a in actions if isinstance(a, LifecycleNode)]
        assert node.node_executable == "stereo_adapt_lifecycle_node"
        emitted = [a.event.transition_id for a in actions if isinstance(a, EmitEvent)]
        handlers = [a.event_handler for a in actions if isinstance(a, RegisterEventHandler)
                    and type(a.event_handler).__name__ == "OnStateTransition"]
        if autostart == "false":
            assert emitted == [] and handlers == []
            continue
        assert emitted == [Transition.TRANSITION_CONFIGURE]
        handler, = handlers
        then = [entity.event.transition_id for entity in handler.entities
                if isinstance(entity, EmitEvent)]
        assert then == [Transition.TRANSITION_ACTIVATE]
