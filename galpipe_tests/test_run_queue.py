"""`galpipe run --workers N` through Dagster's run queue, and the cluster set-up on one machine:
PostgreSQL (started here) holds Dagster's storage and MLflow's store behind an MLflow server;
the Dagster daemon launches the runs. Parallel runs must overlap, give the sequential run's
results, and never lock a database."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance, RunsFilter

from galpipe.cli import RUN_STAGES, pipeline_steps
from galpipe.instance import EARLIER_OWN_CONFIG_LINE, OWN_CONFIG_LINE, write_instance_config
from galpipe.project import ProjectError
from galpipe.ui import free_ports, start_server, stop_servers, wait_until_answering
from galpipe_tests.conftest import galpipe_in, write_project

GALPIPE = str(Path(sys.executable).with_name("galpipe"))
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def test_each_step_waits_for_what_it_reads():
    steps = {s.label: s for s in pipeline_steps(["bar", "edge_on"], ["0", "25"], ["chunk-00"])}
    assert steps["pretrained_model[bar]"].needs == ("data",)
    assert steps["finetuned_models[bar|25]"].needs == ("data", "pretrained_model[bar]")
    # The evaluation reads every fine-tuning partition: it waits for them all, failed or not.
    assert set(steps["evaluation_table"].after) >= {"finetuned_models[bar|0]", "finetuned_models[edge_on|25]"}
    assert steps["target_morphology[chunk-00]"].needs == ("evaluation_table",)
    later = pipeline_steps(["bar"], ["25"], ["chunk-00"], from_stage="finetuned_models")
    assert [s.label for s in later][0] == "finetuned_models[bar|25]" and later[0].needs == ()  # read, not re-run
    assert {s.stage for s in later} == set(RUN_STAGES[2:])


def test_a_dagster_yaml_of_your_own_is_never_rewritten(tmp_path):
    config = tmp_path / "dagster.yaml"
    assert write_instance_config(tmp_path, 3)
    assert "max_concurrent_runs: 3" in config.read_text()
    assert write_instance_config(tmp_path, 2)  # galpipe's own file follows the worker count
    assert "max_concurrent_runs: 2" in config.read_text()
    inode = config.stat().st_ino
    assert write_instance_config(tmp_path)  # a plain run (or galpipe ui) keeps the queue it finds
    assert "max_concurrent_runs: 2" in config.read_text() and config.stat().st_ino == inode  # not rewritten
    assert write_instance_config(tmp_path, 1)  # one worker asked for: no queue
    assert "max_concurrent_runs" not in config.read_text() and "NoOpComputeLogManager" in config.read_text()
    config.write_text(EARLIER_OWN_CONFIG_LINE + "\nrun_queue:\n  max_concurrent_runs: 4\n")
    assert write_instance_config(tmp_path)  # a file galpipe wrote under its earlier first line is its own
    assert "max_concurrent_runs: 4" in config.read_text() and config.read_text().startswith(OWN_CONFIG_LINE)
    unreadable = (": [", "not a dagster.yaml galpipe can read")
    not_a_count = ("run_queue:\n  max_concurrent_runs: two\n",
                   "run_queue.max_concurrent_runs must be a whole number >= 1, not 'two'")
    for broken, named in (unreadable, not_a_count):
        config.write_text(OWN_CONFIG_LINE + "\n" + broken)  # galpipe's file, edited by hand
        with pytest.raises(ProjectError, match=re.escape(f"{config}: {named}")):
            write_instance_config(tmp_path)
    for yours in ("run_queue:\n  max_concurrent_runs: 5\n", "# Written by galpipe-ops, by hand\ntelemetry: {}\n"):
        config.write_text(yours)
        assert not write_instance_config(tmp_path, 2) and not write_instance_config(tmp_path)
        assert config.read_text() == yours


def test_galpipes_instance_copies_no_step_output_into_files_and_sends_no_telemetry(tmp_path):
    from dagster import DagsterInstance
    from dagster._core.storage.noop_compute_log_manager import NoOpComputeLogManager

    write_instance_config(tmp_path)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.compute_log_manager, NoOpComputeLogManager)
        assert not instance.telemetry_enabled
        assert instance.is_persistent  # SQLite storage in the folder, as without the file


def test_galpipe_run_refuses_fewer_than_one_worker(tmp_path, capsys):
    assert galpipe_in(tmp_path, ["run", "--profile", "tiny", "--workers", "0"]) == 2
    assert "--workers 0: must be at least 1" in capsys.readouterr().err


def wait_for(ready, what: str, process: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.3)
    raise TimeoutError(f"{what} did not start within {seconds:.0f} s")


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on 127.0.0.1 (Debian's; initdb refuses root, so it runs as `postgres`),
    with databases for Dagster and MLflow; stopped by its PID afterwards."""
    import psycopg2

    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    assert binaries, "PostgreSQL is not installed: `make test` installs Debian's postgresql package"
    bin_dir = binaries[-1].parent
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="galpipe-postgres-"))
    if as_postgres:
        shutil.chown(folder, "postgres")
    subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(folder / "db"), "-U", "postgres", "-A", "trust",
                    "--no-sync"], check=True, capture_output=True)
    (port,) = free_ports(1)
    server = subprocess.Popen([*as_postgres, str(bin_dir / "postgres"), "-D", str(folder / "db"), "-h", "127.0.0.1",
                               "-p", str(port), "-k", str(folder), "-F"], stdout=subprocess.DEVNULL,
                              stderr=open(folder / "postgres.log", "wb"), start_new_session=True)

    def connect(db="postgres"):
        return psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname=db)

    try:
        wait_for(lambda: connect().close() or True, "PostgreSQL", server)
        with contextlib.closing(connect()) as conn:
            conn.autocommit = True
            for db in ("dagster", "mlflow"):
                conn.cursor().execute(f"CREATE DATABASE {db}")
        yield port
    finally:
        stop_servers([server])
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """`mlflow server` on PostgreSQL with a folder as its artifact store, stopped by its PID afterwards."""
    (port,) = free_ports(1)
    artifacts = tmp_path_factory.mktemp("mlflow-artifacts")
    server = start_server("mlflow", [MLFLOW, "server", "--backend-store-uri",
                                     f"postgresql+psycopg2://postgres:galpipe@127.0.0.1:{postgres}/mlflow",
                                     "--artifacts-destination", str(artifacts), "--host", "127.0.0.1",
                                     "--port", str(port), "--workers", "1"], artifacts.parent, dict(os.environ))
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(server, f"{uri}/health", 120)  # fails with the end of the server's log
        yield uri
    finally:
        stop_servers([server])


def run_galpipe(folder: Path, argv: list[str], **env) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(folder / ".dagster_home"), **env}
    return subprocess.run([GALPIPE, *argv], cwd=folder, env=env, capture_output=True, text=True, timeout=1200)


def test_parallel_runs_on_postgresql_overlap_and_match_the_sequential_run(postgres, mlflow_server, tmp_path):
    # One task, two label budgets: the two fine-tuning partitions are what must run at once, each long
    # enough (two seeds, eight epochs) that a second's difference in starting cannot keep them apart.
    project = write_project(tmp_path, tasks=["featured"], label_budgets=[25, "full"], strategies=["full", "scratch"],
                            adaptation_strategies=[], adaptation_budgets=[], selections=["random"],
                            selection_strategies=[], seeds=[0, 1], finetune_max_epochs=8, patience=8)
    sequential, parallel = tmp_path / "sequential", tmp_path / "parallel"
    for folder in (sequential, parallel):
        folder.mkdir()
    # The same threads for both: the parallel runs get one each (2 workers on 2 cores, or fewer cores).
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    done = run_galpipe(sequential, ["run", "--config", project], OMP_NUM_THREADS=threads)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    home = parallel / ".dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(f"""# a platform engineer's file: Dagster's storage on PostgreSQL
storage:
  postgres:
    postgres_db:
      username: postgres
      password: galpipe
      hostname: 127.0.0.1
      port: {postgres}
      db_name: dagster
      scheme: postgresql+psycopg2
run_queue:
  max_concurrent_runs: 2
  dequeue_interval_seconds: 1  # a run queued just after the daemon's pass waits 1 s, not 5
""")
    done = run_galpipe(parallel, ["run", "--config", project, "--workers", "2"], MLFLOW_TRACKING_URI=mlflow_server)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "dagster.yaml is yours" in output
    daemon_log = next(parallel.glob("data/*/dagster_daemon.log")).read_text()
    assert "database is locked" not in (output + daemon_log).lower()

    os.environ["DAGSTER_HOME"] = str(home)  # the instance is the PostgreSQL one of the parallel run
    try:
        with DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            records = instance.get_run_records(RunsFilter(job_name="finetuning_job"))
    finally:
        os.environ.pop("DAGSTER_HOME")
    assert len(records) == 2 and all(r.dagster_run.is_success for r in records)
    (first, second) = sorted(records, key=lambda r: r.start_time)
    assert second.start_time < first.end_time, \
        f"the two fine-tuning runs did not run at the same time: {first.start_time:.1f}-{first.end_time:.1f}, " \
        f"then {second.start_time:.1f}-{second.end_time:.1f} (epoch s)"

    # The same numbers as one after another, from the MLflow server's store on PostgreSQL.
    tables = [pd.read_parquet(next(f.glob("data/*/evaluation_table.parquet"))) for f in (sequential, parallel)]
    keys = ["task", "label_budget", "strategy", "selection"]
    metrics = ["accuracy_mean", "roc_auc_mean", "completeness_1_mean", "purity_1_mean"]
    expected, got = (t.sort_values(keys).reset_index(drop=True)[keys + metrics] for t in tables)
    assert len(expected) >= 3
    pd.testing.assert_frame_equal(got, expected)

    from mlflow import MlflowClient

    registered = MlflowClient(mlflow_server).search_registered_models()
    assert any(m.name.endswith("-featured-des") for m in registered)


def test_the_readme_cluster_dagster_yaml_is_valid(tmp_path):
    """The README's `dagster.yaml` for a cluster passes Dagster's instance schema, and its run
    launcher block passes dagster-k8s's K8sRunLauncher schema (no cluster needed to check that)."""
    import textwrap

    import yaml
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Running on a cluster"):]
    block = textwrap.dedent(section[section.index("```yaml") + len("```yaml"):section.index("```\n", section.index("```yaml"))])
    (tmp_path / "dagster.yaml").write_text(block)
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    launcher = yaml.safe_load(block)["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    checked = validate_config(K8sRunLauncher.config_type(), launcher["config"])
    assert checked.success, checked.errors
