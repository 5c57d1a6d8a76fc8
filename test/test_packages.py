"""Dependencies point down (the style guide's layering), with no import cycle: each package
imports first in a fresh interpreter, and no module imports a package above its own."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import stereo_adapt_ros

PACKAGE = Path(stereo_adapt_ros.__file__).parent
#: Bottom up: a package imports only packages of a lower rank (and itself).
RANKS = {"options": 0, "files": 0, "data": 1, "network": 1, "matching": 2, "training_data": 2,
         "adaptation": 3, "evaluation": 4, "training": 5, "ros": 6, "cli": 7, "__main__": 8}
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
MODULES = sorted(PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str:
    """The package (or top-level module) ``path`` belongs to."""
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _imported_layers(path: Path) -> set[str]:
    """The packages of this project that the module at ``path`` imports (anywhere in it)."""
    parts = ["stereo_adapt_ros", *path.relative_to(PACKAGE).with_suffix("").parts]
    here = parts[:-1]  # the package a relative import starts from (also for __init__)
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - node.level + 1]
            targets.add(".".join([*base, *([node.module] if node.module else [])]))
        elif isinstance(node, ast.ImportFrom):
            targets.add(node.module or "")
        elif isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
    return {t.split(".")[1] for t in targets
            if t.startswith("stereo_adapt_ros.") and t != "stereo_adapt_ros"}


def test_every_package_has_a_rank():
    assert set(SUBPACKAGES) <= RANKS.keys()
    assert {_layer(path) for path in MODULES} - {"__init__"} <= RANKS.keys()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_package_above_its_own(path):
    layer = _layer(path)
    if layer == "__init__":
        assert not _imported_layers(path)
        return
    above = {other for other in _imported_layers(path) - {layer}
             if RANKS[other] >= RANKS[layer]}
    assert not above, f"{layer} (rank {RANKS[layer]}) imports {above}"


def test_data_network_and_matching_import_nothing_above_them():
    upper = {"training_data", "adaptation", "evaluation", "training", "ros", "cli"}
    for path in MODULES:
        if _layer(path) in ("matching", "data", "network"):
            assert not _imported_layers(path) & upper, path


@pytest.mark.slow
def test_each_package_imports_first_in_a_fresh_interpreter():
    """A cycle fails only when one of its packages is imported first: try each first, and all
    of them top down and bottom up."""
    names = [*SUBPACKAGES, "options"]
    orders = [[name] for name in names] + [sorted(names, key=RANKS.get),
                                           sorted(names, key=RANKS.get, reverse=True)]
    runs = [(order, subprocess.Popen(
        [sys.executable, "-c", "; ".join(f"import stereo_adapt_ros.{n}" for n in order)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)) for order in orders]
    failed = {}
    for order, process in runs:
        output, _ = process.communicate(timeout=300)
        if process.returncode:
            failed[" then ".join(order)] = output[-2000:]
    assert not failed, failed


#: What only pretraining needs: the training data (its photo downloader brings subprocess,
#: tarfile and zipfile; its single-photo stereo, scikit-image's segmentation) and training.
TRAINING_ONLY = ("stereo_adapt_ros.training_data", "stereo_adapt_ros.training",
                 "skimage.segmentation")


def test_the_node_and_the_library_under_it_name_no_training_data():
    for path in MODULES:
        if _layer(path) in ("ros", "adaptation", "evaluation"):
            assert not _imported_layers(path) & {"training_data", "training"}, path


@pytest.mark.slow
def test_importing_the_node_loads_no_training_data():
    """In a fresh interpreter, however indirectly. (torch itself imports tarfile and zipfile,
    so those cannot be checked.)"""
    code = ("import sys, stereo_adapt_ros.ros.node; "
            f"print(*sorted(m for m in sys.modules if m.startswith({TRAINING_ONLY!r})))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, check=True).stdout.split()
    assert not loaded, loaded
