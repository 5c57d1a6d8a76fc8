"""Where the photo library lives on disk (``stereo-adapt photos fetch`` fills it; see
``training_data/photos.py``). Kept here, below the fetcher, because the OAK-D reader of
``datasets`` reads the stereo pairs the library holds."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the library root.
ENV_ROOT = "STEREO_ADAPT_PHOTOS"
#: Where the stereodemo source puts the OAK-D pairs and their calibration, below the root.
OAKD_FOLDER = "stereodemo/oak-d"


def default_root() -> Path:
    """The library root: ``$STEREO_ADAPT_PHOTOS`` when set, else
    ``~/.cache/stereo_adapt_ros/photos``."""
    configured = os.environ.get(ENV_ROOT)
    return Path(configured) if configured else Path.home() / ".cache/stereo_adapt_ros/photos"
