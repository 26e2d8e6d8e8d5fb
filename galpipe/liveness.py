"""Telling a run whose process died (kill -9, power cut) from one still running: runs carry a
token naming their process (host, pid and the pid's start time, so a reused pid is not taken
for the old process), and the next start of galpipe marks as failed the runs whose process is gone."""

from __future__ import annotations

import os
import socket
from functools import cache

TAG = "galpipe.process"


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]  # after the command name, which may hold spaces
    except (OSError, IndexError):
        return None


@cache
def process_token() -> str:
    """host:pid:start-ticks of this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def process_is_gone(token: str) -> bool:
    """True only when `token` names a process of this host that no longer runs; a process of
    another host (or a malformed token) might be alive, so it is never called gone."""
    host, _, rest = token.partition(":")
    pid, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit() or ticks in ("", "None"):
        return False
    return _start_ticks(int(pid)) != ticks
