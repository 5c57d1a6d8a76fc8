"""package.xml lists what the code imports and runs, and nothing it does not: each third-party
module imported by the package, the launch file and the tests has its rosdep key."""

import ast
import sys
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
#: rosdep keys of modules whose key is not their name (ROS packages' keys are their names).
KEYS = {"numpy": "python3-numpy", "cv2": "python3-opencv", "skimage": "python3-skimage",
        "tqdm": "python3-tqdm", "rosbags": "python3-rosbags-pip", "torch": "python3-torch",
        "pytest": "python3-pytest", "matplotlib": "python3-matplotlib",
        "yaml": "python3-yaml", "PIL": "python3-pil"}
#: No rosdep key (package.xml says to pip install it).
WITHOUT_KEY = {"safetensors"}
#: Started by the launch file where installed, never a dependency (rviz:=true is optional).
OPTIONAL_EXECUTABLES = {"rviz2"}
#: Imported only by an optional command (``stereo-adapt plot``): a test dependency.
OPTIONAL = {"matplotlib"}


def _imports(paths) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
    # The package and the test folder's own helper modules (ros_harness, conftest, ...).
    local = {"stereo_adapt_ros"} | {p.stem for p in (ROOT / "test").glob("*.py")}
    return {n for n in names if n not in sys.stdlib_module_names and n not in local}


def _depends(kind: str) -> set[str]:
    root = ElementTree.parse(ROOT / "package.xml").getroot()
    return {element.text for element in root.iter(kind)}


def test_every_imported_module_is_a_dependency_and_every_dependency_is_used():
    code = _imports([*(ROOT / "src" / "stereo_adapt_ros").rglob("*.py"),
                     *(ROOT / "launch").glob("*.py")])
    needed = {KEYS.get(name, name) for name in code - WITHOUT_KEY - OPTIONAL}
    listed = _depends("exec_depend")
    assert needed - listed == set(), "imported but not in package.xml"
    launch = (ROOT / "launch" / "stereo_adapt.launch.py").read_text()
    assert all(f"package='{name}'" in launch for name in OPTIONAL_EXECUTABLES)
    assert listed & OPTIONAL_EXECUTABLES == set(), "optional, not a dependency"
    assert listed - needed == set(), "in package.xml but never used"
    assert {KEYS[name] for name in OPTIONAL} <= _depends("test_depend")


def test_the_tests_dependencies_are_test_dependencies():
    used = _imports(ROOT.joinpath("test").glob("*.py"))
    keys = {KEYS.get(name, name) for name in used - WITHOUT_KEY}
    assert keys - _depends("exec_depend") - _depends("test_depend") == set()
