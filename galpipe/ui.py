"""`galpipe ui`: start the Dagster UI (webserver and daemon, as `dagster dev` does, but with the
webserver behind galpipe.ui_guard, which refuses requests from other web sites) and the MLflow UI
(`mlflow ui`; none where $MLFLOW_TRACKING_URI names a tracking server, which serves its own) on
127.0.0.1 for a project folder, wait until they answer, and stop them, child processes included,
on exit.
Each server logs to <project>/.galpipe_ui/ instead of the terminal."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager, suppress
from pathlib import Path

from galpipe.instance import write_instance_config
from galpipe.links import DAGSTER_UI_VARIABLE, MLFLOW_UI_VARIABLE
from galpipe.project import DEFAULT_PROJECT, PROJECT_VARIABLE, project_reference

HOST = "127.0.0.1"
BIN = Path(sys.executable).parent  # dagster and mlflow are installed next to this Python
LOG_FOLDER = ".galpipe_ui"


class UiError(RuntimeError):
    """A UI server that cannot start: port taken, early exit, or no answer in time."""


def check_port_free(port: int, what: str) -> None:
    with socket.socket() as probe:
        # SO_REUSEADDR so that a port left in TIME_WAIT by a previous run counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            raise UiError(f"port {port} on {HOST} is already in use: pick another for the {what}") from None


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on, all different: each probe stays bound until all are picked."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind((HOST, 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def dagster_command(project_dir: Path, port: int) -> list[str]:
    # workspace.yaml sits in the repository root; a project folder elsewhere loads the module itself.
    where = (["--workspace", "workspace.yaml"] if (project_dir / "workspace.yaml").is_file()
             else ["--module", "galpipe.definitions"])
    return [sys.executable, "-m", "galpipe.ui_guard", "--port", str(port), *where]


def mlflow_uri(project_dir: Path) -> str:
    """The MLflow store the project's runs go to, as `galpipe run` picks it (default_tracking_uri:
    $MLFLOW_TRACKING_URI where set, else the project's SQLite file), a relative SQLite path taken
    from the project folder."""
    from galpipe.tracking import default_tracking_uri, sqlite_path

    uri = default_tracking_uri()
    db = sqlite_path(uri)
    return f"sqlite:///{project_dir / db}" if db is not None else uri


def is_tracking_server(tracking_uri: str) -> bool:
    """A tracking server serves its own UI (`mlflow server`); galpipe ui links to it, starts none."""
    return tracking_uri.startswith(("http://", "https://"))


def check_tracking_server(tracking_uri: str, timeout_s: float = 10.0) -> None:
    """A tracking server that does not answer is named before anything waits on it."""
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s):
            return
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError) as err:
        raise UiError(f"MLFLOW_TRACKING_URI={tracking_uri}: no MLflow tracking server answers there ({err})") from None


def recover_project(dagster_home: Path, tracking_uri: str) -> None:
    """Before the UIs show it: runs a killed process left going are marked failed, and MLflow's
    artifact paths follow a project that was copied or moved."""
    from dagster import DagsterInstance

    from galpipe.recovery import fail_stale_runs
    from galpipe.tracking import follow_project_move

    follow_project_move(tracking_uri)
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        for line in fail_stale_runs(instance, tracking_uri):
            print(f"[galpipe ui] {line}", flush=True)


def mlflow_command(tracking_uri: str, port: int) -> list[str]:
    return [str(BIN / "mlflow"), "ui", "--backend-store-uri", tracking_uri,
            "--host", HOST, "--port", str(port),
            "--workers", "1"]  # one worker is plenty for one user, and light on 2 cores


def log_tail(path: Path, n_lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n_lines:]) if path.is_file() else ""


def start_server(name: str, command: list[str], project_dir: Path, env: dict[str, str]) -> subprocess.Popen:
    """A server process in a session of its own, so that signalling its process group reaches its children too."""
    log_path = project_dir / LOG_FOLDER / f"{name.lower()}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=project_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    process.name, process.log_path = name, log_path
    return process


def stop_servers(processes: list[subprocess.Popen], grace_s: float = 30.0) -> None:
    """Ctrl-C to each process group, as a terminal would send it, then SIGKILL for whatever is left
    (a server that hangs, or one started from a shell that made it ignore SIGINT)."""
    for process in processes:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for process in processes:
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_until_answering(process: subprocess.Popen, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UiError(f"the {process.name} UI exited with code {process.returncode} before answering; "
                          f"end of {process.log_path}:\n{log_tail(process.log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise UiError(f"the {process.name} UI did not answer at {url} within {timeout_s:.0f} s; "
                  f"end of {process.log_path}:\n{log_tail(process.log_path)}")


@contextmanager
def running_ui(project_dir, project: str = DEFAULT_PROJECT, dagster_port: int = 3000, mlflow_port: int = 5000,
               dagster_timeout_s: float = 180.0, mlflow_timeout_s: float = 60.0):
    """Start the UIs on the project directory, Dagster's definitions built from `project` (a shipped
    project's name or a project file), and yield (dagster_url, mlflow_url) once both answer HTTP
    (mlflow_url: $MLFLOW_TRACKING_URI's server where it names one, else the MLflow UI started here)."""
    project_dir = Path(project_dir).resolve()
    tracking_uri = mlflow_uri(project_dir)
    served = is_tracking_server(tracking_uri)
    check_port_free(dagster_port, "Dagster UI (--dagster-port)")
    if served:
        check_tracking_server(tracking_uri)
    else:
        check_port_free(mlflow_port, "MLflow UI (--mlflow-port)")
    dagster_home = project_dir / ".dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    write_instance_config(dagster_home)  # as `galpipe run` writes it; one of your own is kept
    recover_project(dagster_home, tracking_uri)
    dagster_url = f"http://{HOST}:{dagster_port}"
    mlflow_url = tracking_uri.rstrip("/") if served else f"http://{HOST}:{mlflow_port}"
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), PROJECT_VARIABLE: project_reference(project),
           # The runs launched from the UI link to these pages (galpipe.links).
           DAGSTER_UI_VARIABLE: dagster_url, MLFLOW_UI_VARIABLE: mlflow_url,
           # MLflow's background job runner (eight processes, for GenAI scoring) is of no use here.
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    servers = []
    try:  # both start before either is waited on, so that they load in parallel
        servers.append(start_server("Dagster", dagster_command(project_dir, dagster_port), project_dir, env))
        if not served:
            servers.append(start_server("MLflow", mlflow_command(tracking_uri, mlflow_port), project_dir, env))
            wait_until_answering(servers[1], mlflow_url, mlflow_timeout_s)
        wait_until_answering(servers[0], f"{dagster_url}/server_info", dagster_timeout_s)
        yield dagster_url, mlflow_url
    finally:
        stop_servers(servers)


def add_arguments(parser) -> None:
    parser.add_argument("--dagster-port", type=int, default=3000, help="default: %(default)s")
    parser.add_argument("--mlflow-port", type=int, default=5000, help="default: %(default)s")
    parser.add_argument("--project-dir", default=".", help="folder holding data/, mlruns/, .dagster_home/ "
                                                            "(default: the current folder)")


def run_ui(args, project: str) -> int:
    """Serve the UIs until Ctrl-C, Dagster's definitions built from `project`. The servers run in
    sessions of their own, so Ctrl-C reaches only us."""
    print("Starting the Dagster and MLflow UIs (Dagster takes a minute to load) ...", flush=True)
    # A plain `kill` stops both servers as Ctrl-C does, instead of leaving them running.
    previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    served = is_tracking_server(mlflow_uri(Path(args.project_dir).resolve()))
    try:
        with running_ui(args.project_dir, project, args.dagster_port, args.mlflow_port) as (dagster_url, mlflow_url):
            print(f"Dagster UI: {dagster_url}  (assets, runs, checks)")
            print(f"MLflow UI: {mlflow_url}  (runs, registered models"
                  f"{'; the tracking server of $MLFLOW_TRACKING_URI, not started here' if served else ''})")
            print(f"Logs in {Path(args.project_dir).resolve() / LOG_FOLDER}/. "
                  f"Ctrl-C stops {'Dagster' if served else 'both'}.", flush=True)
            while True:
                time.sleep(1.0)
    except KeyboardInterrupt:
        print("\nStopped the Dagster UI." if served else "\nStopped both UIs.")
        return 0
    except UiError as err:
        print(f"galpipe ui: error: {err}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
