"""Writing files so that a reader never finds one half-written: everything galpipe writes goes
through `atomic_write` (a temporary name of its own in the same folder, then one rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# The process's umask, read once at import (setting it is the only way to read it, and not
# thread-safe): files get the mode a plain open() would give them, not mkstemp's owner-only 0600.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def atomic_write(path, write) -> None:
    """Call write(tmp_path), then move the file into place: an interrupted write never leaves a
    file at `path` that looks complete, and two writers never share a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)  # readable by the group and others as the umask allows (a shared MLflow or cluster set-up)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
