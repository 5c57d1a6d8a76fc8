"""Test helper: rewrite a weights file's safetensors metadata, to make malformed files."""

import json
import struct
from pathlib import Path


def with_metadata(path: Path, **fields) -> Path:
    """Rewrite the safetensors header of ``path`` with metadata ``fields`` replaced."""
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    header["__metadata__"].update(fields)
    body = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + size:])
    return path
