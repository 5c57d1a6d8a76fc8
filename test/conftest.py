"""Shared fixtures: real data (the Middlebury Motorcycle pair that ships with scikit-image)."""

import os
import signal

# A runner started in the background of a non-interactive shell ignores SIGINT, and children
# inherit an ignored signal: the tests that interrupt a command or the node with SIGINT (as
# Ctrl-C does) would see it ignored. A handled signal is reset to the default in a child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# As the entry points do (stereo_adapt_ros/cli/__init__.py): the tests run the node in a second
# process beside this one, and spinning OpenMP threads in two processes starve each other.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402 (torch must see the wait policy when it loads OpenMP)
import pytest  # noqa: E402
import torch  # noqa: E402
from skimage import data as skdata

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def motorcycle():
    """Full Motorcycle pair: left, right (500 x 741 x 3 uint8 RGB), disparity (NaN invalid)."""
    left, right, disparity = skdata.stereo_motorcycle()
    disparity = np.where(np.isfinite(disparity), disparity, np.nan).astype(np.float32)
    return left, right, disparity


@pytest.fixture(scope="session")
def motorcycle_crop(motorcycle):
    """A 128 x 256 crop of the pair (same window on both views, so disparity is unchanged)."""
    left, right, disparity = motorcycle
    window = (slice(200, 328), slice(300, 556))
    return left[window], right[window], disparity[window]
