# Development set-up, tests, demo and the colcon build check for stereo_adapt_ros.
#
#   make venv          create .venv (torch, ROS 2 wheels, this package in editable mode)
#   make test          run the tests, with DDS kept on loopback
#   make test-fast     the tests not marked slow (the edit-test loop)
#   make lint          ruff and mypy (settings in pyproject.toml)
#   make demo          run the node on a replay of the embedded sequence, scored, in out/demo
#   make demo-eval     evaluate offline on the embedded sequence (MADNet modes and SGBM)
#   make photos        fetch the real photographs to train on and the OAK-D pairs (docs/photos.md)
#   make devsets       render the development sequences into dev/ (docs/adaptation.md)
#   make colcon-check  build with colcon as a ROS workspace would, and start the executable
#   make device-check  the prepared GPU check on a lent CUDA machine (device-check-dry: CPU)
#   make clean         remove build outputs and results (make distclean: also .venv)
#
# torch is installed only when the venv cannot import one, as $(TORCH_SPEC) (here the CPU
# wheel). On a CUDA machine or a Jetson, keep your own build: create the venv with
#     make venv VENV_FLAGS=--system-site-packages
# so that the system torch is found, or name the wheel to install with TORCH_SPEC=....
# Where ROS 2 is installed from apt and sourced, skip the PyPI ROS wheels with ROS_WHEELS=.

PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
TORCH_SPEC ?= torch==2.13.0
ROS_WHEELS ?= ros-rclpy ros-sensor-msgs ros-stereo-msgs ros-std-srvs ros-diagnostic-msgs \
	ros-geometry-msgs ros-rmw-fastrtps-cpp
COLCON_TOOLS ?= colcon-common-extensions ros-ament-package catkin-pkg

VPY := $(VENV)/bin/python
PACKAGE := stereo_adapt_ros

# Every ROS process started here stays on this computer (see config/fastdds_loopback.xml)
# and uses a domain of its own, so that parallel runs do not see each other. Domains 1-100
# keep every DDS port below the kernel's ephemeral range.
ifndef TEST_DOMAIN_ID
TEST_DOMAIN_ID := $(shell echo $$(( $$$$ % 100 + 1 )))
endif
LOOPBACK_ENV = ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST \
	FASTDDS_DEFAULT_PROFILES_FILE=$(CURDIR)/config/fastdds_loopback.xml \
	RMW_IMPLEMENTATION=rmw_fastrtps_cpp \
	ROS_DOMAIN_ID=$(TEST_DOMAIN_ID)

.DEFAULT_GOAL := help
.PHONY: help venv test test-fast lint demo demo-eval colcon-check clean distclean device-check \
	device-check-dry device-wheels photos devsets

help:
	@sed -n 's/^#   make /make /p' $(firstword $(MAKEFILE_LIST))

venv: $(VENV)/.stamp

$(VENV)/.stamp: setup.py setup.cfg package.xml Makefile
	test -x $(VPY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(VPY) -m pip install --quiet --upgrade 'pip>=25.1'
	$(VPY) -c 'import torch' 2>/dev/null || $(VPY) -m pip install '$(TORCH_SPEC)'
	$(if $(strip $(ROS_WHEELS)),$(VPY) -m pip install $(ROS_WHEELS))
	$(VPY) -m pip install -e '.[test]'
	touch $@

$(VENV)/.stamp-colcon: $(VENV)/.stamp
	$(VPY) -m pip install $(COLCON_TOOLS)
	touch $@

test: venv
	$(LOOPBACK_ENV) $(VPY) -m pytest -q test

test-fast: venv
	$(LOOPBACK_ENV) $(VPY) -m pytest -q -m "not slow" test

lint: venv
	$(VENV)/bin/ruff check src test
	$(VENV)/bin/mypy src/stereo_adapt_ros

# The node in the background and a replay of the embedded Motorcycle pan through it, scored
# as it adapts, from the shipped synthetic weights (DEMO_WEIGHTS=random for an untrained
# network, or a .safetensors file).
DEMO_WEIGHTS ?= synthetic
DEMO_MODE ?= mad

demo: venv
	mkdir -p out/demo
	@set -eu; \
	$(LOOPBACK_ENV) $(VENV)/bin/stereo-adapt node --weights $(DEMO_WEIGHTS) \
		--adaptation-mode $(DEMO_MODE) > out/demo/node.log 2>&1 & node=$$!; \
	trap 'kill -INT $$node 2>/dev/null; wait $$node || true' EXIT; \
	echo "node started (log: out/demo/node.log), weights $(DEMO_WEIGHTS), mode $(DEMO_MODE)"; \
	$(LOOPBACK_ENV) $(VENV)/bin/stereo-adapt replay --evaluate --rate fast \
		--save out/demo/frames --save-every 8 --json out/demo/replay.json

demo-eval: venv
	mkdir -p out/demo
	$(LOOPBACK_ENV) $(VENV)/bin/stereo-adapt eval --method both --adaptation-mode none,full,mad \
		--save out/demo --json out/demo/eval.json

# Into $STEREO_ADAPT_PHOTOS, else ~/.cache/stereo_adapt_ros/photos; sources already there are
# skipped, so running it again is cheap.
photos: venv
	$(VENV)/bin/stereo-adapt photos fetch

# The development sequences of docs/adaptation.md, with exact ground truth: the harsh ones
# (dev/harsh/NAME; `stereo-adapt synth --help` lists them) and the held-out photo and
# procedural sequences (the photo one needs `make photos`). The pan is embedded in eval.
devsets: venv
	$(VENV)/bin/stereo-adapt synth dev/harsh --harsh all --sequence 24 --seed 7
	$(VENV)/bin/stereo-adapt synth dev/photo --source photo --split heldout --count 20 \
		--sequence 40 --size 320x640 --seed 50000
	$(VENV)/bin/stereo-adapt synth dev/procedural --count 20 --sequence 40 --size 256x640 \
		--max-disparity 80 --seed 50000

# Builds in a temporary workspace outside the repository (nothing lands in build/, install/
# or log/ here), then checks what `ros2 run` relies on: the package is in the ament index,
# its executables are in <prefix>/lib/stereo_adapt_ros, and they start with the installed
# copy of the package rather than the editable one in the venv.
define COLCON_CHECK_PY
import sys
import stereo_adapt_ros
from ament_index_python.packages import get_package_prefix
prefix = sys.argv[1]
found = get_package_prefix('$(PACKAGE)')
assert found == prefix, f'ament index finds $(PACKAGE) in {found}, not {prefix}'
assert stereo_adapt_ros.__file__.startswith(prefix), f'imported from {stereo_adapt_ros.__file__}'
print('ament index prefix and import path:', prefix)
endef
export COLCON_CHECK_PY

colcon-check: $(VENV)/.stamp-colcon
	@set -eu; \
	ws=$$(mktemp -d "$${TMPDIR:-/tmp}/$(PACKAGE)-colcon.XXXXXX"); \
	trap 'rm -rf "$$ws"' EXIT; \
	echo "colcon workspace: $$ws"; \
	$(VENV)/bin/colcon --log-base "$$ws/log" build --base-paths . \
		--build-base "$$ws/build" --install-base "$$ws/install" \
		--event-handlers summary+; \
	prefix="$$ws/install/$(PACKAGE)"; \
	for f in share/ament_index/resource_index/packages/$(PACKAGE) share/$(PACKAGE)/package.xml \
		share/$(PACKAGE)/config/fastdds_loopback.xml lib/$(PACKAGE)/stereo-adapt \
		lib/$(PACKAGE)/stereo_adapt_node lib/$(PACKAGE)/stereo_adapt_lifecycle_node; do \
		test -e "$$prefix/$$f" || { echo "colcon-check: missing $$prefix/$$f" >&2; exit 1; }; \
	done; \
	set +u; . "$$ws/install/local_setup.sh"; set -u; \
	export AMENT_PREFIX_PATH="$$AMENT_PREFIX_PATH:$(abspath $(VENV))"; \
	$(VPY) -c "$$COLCON_CHECK_PY" "$$prefix"; \
	$(LOOPBACK_ENV) "$$prefix/lib/$(PACKAGE)/stereo-adapt" --help; \
	out=$$($(LOOPBACK_ENV) "$$prefix/lib/$(PACKAGE)/stereo_adapt_node" \
		--ros-args -p weights:=/nonexistent.safetensors 2>&1) && rc=0 || rc=$$?; \
	echo "$$out"; \
	test $$rc = 1 && echo "$$out" | grep -q "cannot load weights" || \
		{ echo "colcon-check: stereo_adapt_node did not start as expected" >&2; exit 1; }; \
	echo "colcon-check: OK"

clean:
	rm -rf build install log out .pytest_cache .mypy_cache .ruff_cache src/*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

# The prepared GPU check (scripts/device_check.sh): run it on a lent CUDA machine with the
# wheels of `make device-wheels` beside it; `make device-check-dry` is its CPU rehearsal.
DEVICE_OUT ?= out/device
device-check:
	bash scripts/device_check.sh $(DEVICE_OUT)

device-check-dry: venv
	PYTHON=$(abspath $(VPY)) bash scripts/device_check.sh --dry-run $(DEVICE_OUT)

# Pure-Python and binary wheels for the GPU machine's python3.12 that it lacks (rosbags and
# its needs), into .whl/ (ignored); the device check installs them from there.
DEVICE_WHEELS ?= rosbags==0.11.9 lz4 ruamel.yaml backports.zstd apsw
device-wheels:
	mkdir -p .whl
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $(DEVICE_WHEELS)
