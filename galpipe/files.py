"""Writing files so that a reader never finds one half-written: everything galpipe writes goes
through `atomic_write` (a temporary name of its own in the same folder, then one rename)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def atomic_write(path, write) -> None:
    """Call write(tmp_path), then move the file into place: an interrupted write never leaves a
    file at `path` that looks complete, and two writers never share a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.part"
    # Created by us (O_EXCL) with the mode a plain open() gives, 0o666 less the umask, not
    # tempfile.mkstemp's owner-only 0o600: others may read it as the umask allows (a shared set-up).
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
