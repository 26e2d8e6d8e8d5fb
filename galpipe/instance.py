"""The project's Dagster instance: the dagster.yaml galpipe writes in DAGSTER_HOME when there is
none (`galpipe run`, `galpipe ui`), and rewrites only while its first line is galpipe's."""

from __future__ import annotations

from pathlib import Path

import yaml

from galpipe.files import atomic_write
from galpipe.project import ProjectError

# The first line of a dagster.yaml that galpipe wrote, and may rewrite (e.g. for another worker count).
OWN_CONFIG_LINE = "# Written by galpipe; delete this line to keep your edits."
# The same, in the files galpipe wrote before 2026-11-28 (then only for `galpipe run --workers`).
EARLIER_OWN_CONFIG_LINE = "# Written by `galpipe run --workers`; delete this line to keep your edits."
POOL_TAG = "galpipe/pool"  # runs that train share the pool "training"; its limit is the worker count


def write_instance_config(dagster_home: Path, workers: int | None = None) -> bool:
    """galpipe's dagster.yaml for the project's instance, unless the folder has one of someone
    else's (kept as it is). Returns whether galpipe's own file is in force.

    SQLite storage in the folder (Dagster's default). No capture of each step's stdout and stderr
    into files (a `tail` and a Python watcher process started for every run, ~60 ms of a partition;
    galpipe's steps log through Dagster's event log, and their output still reaches the terminal,
    the daemon's log for queued runs, or .galpipe_ui/dagster.log for runs launched from the UI) and
    no usage telemetry (~10 ms a run). `workers` above 1: a run queue that starts at most that many
    runs at once; None keeps the queue of galpipe's file there, if it has one."""
    path = dagster_home / "dagster.yaml"
    before = path.read_text() if path.is_file() else None
    if before is not None and before.split("\n", 1)[0] not in (OWN_CONFIG_LINE, EARLIER_OWN_CONFIG_LINE):
        return False
    if workers is None:
        workers = _queued_workers(path, before)
    text = f"""{OWN_CONFIG_LINE}
# SQLite storage in this folder; steps' output is not copied into files (see galpipe.instance).
compute_logs:
  module: dagster.core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
telemetry:
  enabled: false
"""
    if workers > 1:
        text += f"""# The queue starts at most {workers} runs at once.
run_queue:
  max_concurrent_runs: {workers}
  dequeue_interval_seconds: 1  # the next run starts within a second of a slot freeing (default 5)
  tag_concurrency_limits:
    - key: "{POOL_TAG}"
      value: "training"
      limit: {workers}
run_monitoring:
  enabled: true  # a run whose process died is marked failed by the daemon
"""
    if text != before:
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return True


def _queued_workers(path: Path, text: str | None) -> int:
    """The run queue's size in galpipe's file (1 without a queue), named by file if it cannot be read."""
    try:
        workers = ((yaml.safe_load(text or "") or {}).get("run_queue") or {}).get("max_concurrent_runs", 1)
    except (yaml.YAMLError, AttributeError) as err:
        raise ProjectError(f"{path}: not a dagster.yaml galpipe can read ({err}); delete its first line to "
                           "keep it as your own, or the file to have galpipe write it again") from err
    if not isinstance(workers, int) or workers < 1:
        raise ProjectError(f"{path}: run_queue.max_concurrent_runs must be a whole number >= 1, not {workers!r}")
    return workers
