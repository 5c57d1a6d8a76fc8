"""Atomic file writes: the one way every file of this package is written.

``atomic_write_bytes`` writes into a temporary beside the destination and renames it over the
destination, so a reader sees the old file or the new one, never half of one. The temporary is
named ``.<name>.tmp-<pid>-<random>``: one left by a process killed during a write is recognised
by ``remove_stale_temporaries``, and removed once that process is gone. The temporary is
created with mode 0666 less the umask (0644 under the usual 022), as ``open`` creates files,
not with ``mkstemp``'s 0600, and the renamed file keeps that mode.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring): the bytes reach the
    disk (fsync) before the rename. The folder must exist. Returns the path written."""
    path = Path(path)
    temporary = path.with_name(f"{_temporary_prefix(path)}{os.getpid()}-{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries that ``atomic_write_bytes`` left beside ``path`` in a process
    that no longer runs (e.g. killed during a write); those of running processes are kept.
    Returns the files removed."""
    path = Path(path)
    prefix = _temporary_prefix(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.iterdir():
        if not candidate.name.startswith(prefix):
            continue
        pid_text = candidate.name[len(prefix):].partition("-")[0]
        if not pid_text.isdigit() or _process_alive(int(pid_text)):
            continue
        try:
            candidate.unlink()
        except FileNotFoundError:  # another process removed it first
            continue
        removed.append(candidate)
    return removed
