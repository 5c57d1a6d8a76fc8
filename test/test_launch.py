"""The launch file, where launch and launch_ros are installed (a ROS install; skipped where only
the PyPI wheels exist): the node and rviz land in the namespace given, so that rviz's relative
topics are the node's outputs."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def launch_file(tmp_path, monkeypatch):
    pytest.importorskip("launch_ros", reason="no launch_ros here (it comes with a ROS install)")
    # The launch file finds its config through the ament index: a prefix with this package.
    prefix = tmp_path / "prefix"
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "stereo_adapt_ros").write_text("")
    (prefix / "share" / "stereo_adapt_ros").mkdir()
    (prefix / "share" / "stereo_adapt_ros" / "config").symlink_to(ROOT / "config")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    spec = importlib.util.spec_from_file_location("stereo_adapt_launch",
                                                  ROOT / "launch" / "stereo_adapt.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nodes(description, context):
    """The launch_ros Nodes of ``description`` (the node comes out of an OpaqueFunction)."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch_ros.actions import Node

    nodes = []
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            entity.execute(context)
        elif isinstance(entity, OpaqueFunction):
            nodes += [n for n in entity.execute(context) if isinstance(n, Node)]
        elif isinstance(entity, Node):
            nodes.append(entity)
    return nodes


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
