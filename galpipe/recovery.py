"""After a crash or kill -9: the Dagster runs and MLflow runs a dead process left STARTED or
RUNNING are marked failed when galpipe next starts (`galpipe run`, `galpipe ui`), so the UIs
never show work as going on that nobody is doing. Only runs whose process token
(galpipe.liveness) names a process of this host that is gone are touched."""

from __future__ import annotations

from galpipe.liveness import process_is_gone
from galpipe.tracking import absolute_tracking_uri, sqlite_path
from galpipe.tracking import fail_stale_runs as fail_stale_mlflow_runs

DAGSTER_PROCESS_TAG = "galpipe/process"  # Dagster tags allow no dots


def fail_stale_runs(instance, tracking_uri: str) -> list[str]:
    """Mark the dead process's runs failed, in Dagster's instance and in MLflow; returns a line each."""
    from dagster import DagsterRunStatus, RunsFilter
    from mlflow import MlflowClient

    unfinished = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
                                                        DagsterRunStatus.CANCELING]))
    found = []
    for run in unfinished:
        token = run.tags.get(DAGSTER_PROCESS_TAG, "")
        if process_is_gone(token):
            instance.report_run_failed(run, f"its process ended without finishing the run (killed?): {token}")
            found.append(f"Dagster run {run.run_id} marked failed (process {token} is gone)")
    tracking_uri = absolute_tracking_uri(tracking_uri)
    store = sqlite_path(tracking_uri)
    if store is not None and not store.is_file():
        return found  # no MLflow store yet (opening one would create it)
    found += [f"MLflow run {run_id} marked FAILED (its process is gone)"
              for run_id in fail_stale_mlflow_runs(MlflowClient(tracking_uri))]
    return found
