"""`galpipe run --workers N`: the pipeline handed to Dagster. Each step becomes a run submitted to
the project's instance; its queued run coordinator lets at most N run at once, and the Dagster
daemon (started and stopped here unless one already serves the instance) launches each in its
own process with cores/N threads. A step is submitted once the steps it reads from have ended,
so the queue always holds only work that can start. The instance's run records say when each
run started and ended, which is how parallel runs are proven to overlap.

The instance is whatever DAGSTER_HOME/dagster.yaml says: galpipe writes its own
(galpipe.instance) where there is none or its own is there, and never touches one written by
someone else, so the same code runs on PostgreSQL storage and a cluster's run launcher
(README, "Running on a cluster")."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from galpipe.instance import POOL_TAG

DAEMON_HEARTBEAT_FRESH_SECONDS = 60
POLL_SECONDS = 1.0
QUEUED_WARNING_SECONDS = 120
DAEMON_LOG = "dagster_daemon.log"  # in the project's run folder: the daemon's and its runs' output


@dataclass(frozen=True)
class Step:
    """One run of a named job (for one partition) in `galpipe run`."""

    stage: str  # one of cli.RUN_STAGES
    label: str  # e.g. finetuned_models[featured|25]
    job: str
    partition: object = None  # a partition key, or None
    needs: tuple[str, ...] = ()  # steps that must have succeeded first; if one failed, this is skipped
    after: tuple[str, ...] = ()  # steps that must only have ended first

    @property
    def trains(self) -> bool:
        return self.stage in ("pretrained_model", "finetuned_models")


def threads_per_run(workers: int) -> int:
    """Cores shared out between the runs that go on at once, at least one thread each."""
    return max(1, (os.cpu_count() or 1) // workers)


def daemon_is_running(instance) -> bool:
    """Whether some Dagster daemon (e.g. `dagster dev`'s) already serves this instance's queue."""
    beats = instance.get_daemon_heartbeats()
    beat = beats.get("QUEUED_RUN_COORDINATOR")
    return beat is not None and time.time() - beat.timestamp < DAEMON_HEARTBEAT_FRESH_SECONDS


@contextlib.contextmanager
def dagster_daemon(instance, threads: int, log_path: Path):
    """The Dagster daemon for this instance, with `threads` for each run it launches; stopped (by
    its PID) on leaving, unless one was running already, which is then used as it is."""
    if daemon_is_running(instance):
        yield None
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    from galpipe.ui import stop_servers

    daemon = Path(sys.executable).with_name("dagster-daemon")
    with open(log_path, "ab") as log:
        process = subprocess.Popen([str(daemon), "run", "-m", "galpipe.definitions"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        stop_servers([process])  # the process group: the daemon and the code server it started
        instance.wipe_daemon_heartbeats()  # the next `galpipe run` must not take ours for a live daemon


@contextlib.contextmanager
def code_location(instance):
    """galpipe's definitions as Dagster's code location (a code server process), for submitting runs."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import ModuleTarget

    target = ModuleTarget(module_name="galpipe.definitions", attribute=None, working_directory=os.getcwd(),
                          location_name=None)
    with WorkspaceProcessContext(instance, target) as context:
        workspace = context.create_request_context()
        (name,) = workspace.get_code_location_entries()
        location = workspace.get_code_location(name)
        if location is None:
            error = workspace.get_code_location_error(name)
            raise RuntimeError(f"galpipe's definitions did not load in Dagster's code server: {error}")
        yield workspace, location


def create(instance, location, step: Step, defs, run_config: dict) -> str:
    """Create (not yet queue) one run of `step`; returns its run id."""
    from dagster._cli.job import _create_run

    (repository,) = location.get_repositories().values()
    remote_job = repository.get_full_job(step.job)
    tags = {POOL_TAG: "training"} if step.trains else {}
    if step.partition is not None:
        partitions = defs.resolve_job_def(step.job).partitions_def
        tags.update(partitions.get_tags_for_partition_key(step.partition))
    run = _create_run(instance=instance, code_location=location, remote_repo=repository, remote_job=remote_job,
                      run_config=run_config, tags=tags, op_selection=None, run_id=None)
    return run.run_id


def run_steps(instance, defs, steps: list[Step], workers: int, run_config: dict, log_path: Path, report) -> list[dict]:
    """Submit every step as its prerequisites end, wait for all; `report(step, record)` after each.
    Returns per step: label, ok, seconds (the run's own start to end), started/ended (epoch s)."""
    from dagster import DagsterRunStatus

    finished_states = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    done: dict[str, dict] = {}
    running: dict[str, Step] = {}  # run id -> step
    submitted_at: dict[str, float] = {}
    created: dict[str, Step] = {}  # run id -> step: created, not queued yet
    waiting = list(steps)
    warned = False
    with dagster_daemon(instance, threads_per_run(workers), log_path), code_location(instance) as (workspace, location):
        try:
            while waiting or running:
                for step in list(waiting):
                    if any(label in done and not done[label]["ok"] for label in step.needs):
                        waiting.remove(step)
                        done[step.label] = {"step": step.label, "ok": False, "skipped": True, "seconds": 0.0}
                        report(step, done[step.label])
                    elif all(label in done for label in (*step.needs, *step.after)):
                        waiting.remove(step)
                        created[create(instance, location, step, defs, run_config)] = step
                # Creating a run takes a while (its job's snapshot); queueing it is instant. Runs that
                # became ready together are queued together, so the daemon's next pass starts them all.
                for run_id, step in created.items():
                    instance.submit_run(run_id, workspace)
                    running[run_id], submitted_at[run_id] = step, time.time()
                created.clear()
                time.sleep(POLL_SECONDS)
                records = {run_id: instance.get_run_record_by_id(run_id) for run_id in running}
                if not warned and records and all(r.dagster_run.status == DagsterRunStatus.QUEUED for r in records.values()) \
                        and time.time() - min(submitted_at[i] for i in records) > QUEUED_WARNING_SECONDS:
                    warned = True
                    print(f"[galpipe run] nothing has left the queue for {QUEUED_WARNING_SECONDS} s: does a Dagster daemon "
                          f"serve {instance.root_directory}, and does its dagster.yaml allow runs (run_queue)?", flush=True)
                for run_id, record in records.items():
                    if record.dagster_run.status not in finished_states:
                        continue
                    step = running.pop(run_id)
                    started = record.start_time or submitted_at[run_id]
                    ended = record.end_time or time.time()
                    done[step.label] = {"step": step.label, "ok": record.dagster_run.status == DagsterRunStatus.SUCCESS,
                                        "seconds": round(ended - started, 2), "started": started, "ended": ended,
                                        "submitted": submitted_at[run_id], "dagster_run_id": run_id}
                    report(step, done[step.label])
        finally:  # interrupted: what galpipe created or submitted must not start later, nor show as going on
            for run_id in [*running, *created]:
                run = instance.get_run_by_id(run_id)
                if run.status not in finished_states:
                    instance.report_run_canceled(run, "galpipe run ended before this run finished")
    return [done[step.label] for step in steps]


def check_evaluations(instance, run_id: str) -> list:
    """The asset check evaluations a run recorded."""
    from dagster import DagsterEventType

    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
    return [r.event_log_entry.dagster_event.event_specific_data for r in records]
