"""The project's Dagster instance: the dagster.yaml galpipe writes in DAGSTER_HOME when there is
none (`galpipe run`, `galpipe ui`), and rewrites only while its first line is galpipe's."""

from __future__ import annotations

from pathlib import Path

# The first line of a dagster.yaml that galpipe wrote, and may rewrite (e.g. for another worker count).
OWN_CONFIG_MARK = "# Written by galpipe"
EARLIER_OWN_CONFIG_MARK = "# Written by `galpipe run --workers`"  # galpipe's files before 2026-11-28
POOL_TAG = "galpipe/pool"  # runs that train share the pool "training"; its limit is the worker count


def write_instance_config(dagster_home: Path, workers: int) -> bool:
    """galpipe's dagster.yaml for the project's instance, unless the folder has one of someone
    else's (kept as it is). Returns whether galpipe's own file is in force.

    SQLite storage in the folder (Dagster's default). No capture of each step's stdout and stderr
    into files (a `tail` and a Python watcher process started for every run, ~60 ms of a partition;
    galpipe's steps log through Dagster's event log, and their output still reaches the terminal, or
    the daemon's log for queued runs) and no usage telemetry (~10 ms a run). `workers` above 1: a
    run queue that starts at most that many runs at once."""
    path = dagster_home / "dagster.yaml"
    if path.is_file() and not path.read_text().startswith((OWN_CONFIG_MARK, EARLIER_OWN_CONFIG_MARK)):
        return False
    queue = f"""# The queue starts at most {workers} runs at once.
run_queue:
  max_concurrent_runs: {workers}
  dequeue_interval_seconds: 1  # the next run starts within a second of a slot freeing (default 5)
  tag_concurrency_limits:
    - key: "{POOL_TAG}"
      value: "training"
      limit: {workers}
run_monitoring:
  enabled: true  # a run whose process died is marked failed by the daemon
""" if workers > 1 else ""
    path.write_text(f"""{OWN_CONFIG_MARK}; delete this line to keep your edits.
# SQLite storage in this folder; steps' output is not copied into files (see galpipe.instance).
compute_logs:
  module: dagster.core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
telemetry:
  enabled: false
{queue}""")
    return True
