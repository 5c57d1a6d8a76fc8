"""PFM files for the tests of the readers (the library reads PFM, never writes it)."""

from pathlib import Path

import numpy as np


def write_pfm(path: Path, array: np.ndarray) -> None:
    """A float32 H x W or H x W x 3 array as a little-endian PFM file (bottom row first)."""
    array = np.asarray(array)
    assert array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3), array.shape
    height, width = array.shape[:2]
    header = f"{'PF' if array.ndim == 3 else 'Pf'}\n{width} {height}\n-1.0\n".encode("ascii")
    Path(path).write_bytes(header + np.ascontiguousarray(array[::-1], dtype="<f4").tobytes())
