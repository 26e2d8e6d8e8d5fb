"""`galpipe ui` serves a project: in headless Chromium, Dagster lists the assets and MLflow the
registered models with their champion alias; the Dagster UI refuses what another web site could send
it (foreign Origin or Host, mutations by GET, framing) and still answers its own pages and the daemon runs;
both servers are gone afterwards; a busy port is reported in one line.
One UI serves all the tests of this module: Dagster takes about a minute to load on two cores."""

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from galpipe.cli import main
from galpipe.screenshots import DAGSTER_ASSET_LIST, MLFLOW_MODELS, browser_page, page_text
from galpipe.tasks import DEFAULT_TASKS as TASKS
from galpipe.ui import HOST, UiError, check_port_free, free_ports, is_tracking_server, mlflow_command, mlflow_uri, running_ui
from galpipe.ui_guard import only_queries

ASSET_NAMES = ["matched_catalog", "pretrained_model", "finetuned_models", "evaluation_table"]
EVIL = "http://evil.example"
RUN_IDS = "{ runsOrError { ... on Runs { results { runId } } } }"


@pytest.fixture(scope="module")
def served_project(tiny_project):
    """(project folder, Dagster URL, MLflow URL) while `running_ui` serves the tiny project."""
    root, exit_code = tiny_project
    assert exit_code == 0
    dagster_port, mlflow_port = free_ports(2)
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: earlier tests in this process would leave
    # it naming their own store, which galpipe ui would then show instead of the project's.
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        with running_ui(root, "tiny", dagster_port, mlflow_port) as (dagster_url, mlflow_url):
            yield root, dagster_url, mlflow_url
    # Both process groups are stopped: their ports are free again.
    check_port_free(dagster_port, "Dagster UI")
    check_port_free(mlflow_port, "MLflow UI")


def http(url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, str]:
    """(status, body text) of a GET, or of a JSON POST when there is a body; errors are answers too."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={**({"Content-Type": "application/json"} if data else {}),
                                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def graphql(dagster_url: str, query: str, origin: str | None = None) -> dict:
    """A GraphQL POST as a script on this machine sends it (no Origin) or as the UI's own page does."""
    status, text = http(dagster_url + "/graphql", {"query": query}, {"Origin": origin} if origin else {})
    assert status == 200, text
    return json.loads(text)["data"]


def run_ids(dagster_url: str) -> list[str]:
    return [run["runId"] for run in graphql(dagster_url, RUN_IDS)["runsOrError"]["results"]]


def test_ui_shows_assets_and_registered_models(served_project):
    root, dagster_url, mlflow_url = served_project
    model_names = [f"galpipe-tiny-{task}-des" for task in TASKS]
    with browser_page() as page:
        # page_text waits for each text and fails with a timeout naming the one it did not find.
        page_text(page, dagster_url + DAGSTER_ASSET_LIST, ASSET_NAMES)
        models = page_text(page, mlflow_url + MLFLOW_MODELS, [*model_names, "champion"])
    assert models.count("champion") == len(TASKS)  # one alias per task's model
    assert (root / ".galpipe_ui" / "dagster.log").stat().st_size > 0


def test_the_ui_own_page_can_send_mutations(served_project):
    """Chromium adds the page's Origin to the POST, as the UI's own buttons do; the mutation runs."""
    _, dagster_url, _ = served_project
    with browser_page() as page:
        page.goto(dagster_url + DAGSTER_ASSET_LIST)
        answer = page.evaluate("""async () => {
            const response = await fetch('/graphql', {method: 'POST', headers: {'Content-Type': 'application/json'},
                body: JSON.stringify({query: 'mutation { deleteRun(runId: "no-such-run") { __typename } }'})});
            return [response.status, await response.json()];
        }""")
    assert answer == [200, {"data": {"deleteRun": {"__typename": "RunNotFoundError"}}}]


def test_a_mutation_by_get_is_refused_and_deletes_nothing(served_project):
    """What a link, an <img> or a cross-site fetch sends: a GET, with or without the page's Origin."""
    _, dagster_url, _ = served_project
    runs = run_ids(dagster_url)
    assert runs, "the tiny project has Dagster runs to protect"
    mutation = urllib.parse.quote(f'mutation {{ deleteRun(runId: "{runs[0]}") {{ __typename }} }}')
    for headers in ({"Origin": EVIL}, {}):
        status, text = http(f"{dagster_url}/graphql?query={mutation}", headers=headers)
        assert status == 403, text
    assert run_ids(dagster_url) == runs


def test_a_mutation_posted_from_another_origin_is_refused(served_project):
    _, dagster_url, _ = served_project
    runs = run_ids(dagster_url)
    mutation = f'mutation {{ deleteRun(runId: "{runs[0]}") {{ __typename }} }}'
    for origin in (EVIL, "null", dagster_url.replace(HOST, "127.0.0.2")):
        status, text = http(dagster_url + "/graphql", {"query": mutation}, {"Origin": origin})
        assert (status, text) == (403, f"Forbidden: requests from other origins ({origin}) are refused\n")
    assert run_ids(dagster_url) == runs


def test_a_foreign_host_header_is_refused(served_project):
    """A page whose host name was rebound to 127.0.0.1 is its own origin there: only the Host header tells."""
    _, dagster_url, _ = served_project
    port = dagster_url.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}"):
        status, text = http(dagster_url + "/graphql", {"query": RUN_IDS}, {"Host": host})
        assert (status, text) == (403, f"Forbidden: Host {host} is not this UI's\n")
    assert http(dagster_url + "/", headers={"Host": "evil.example"})[0] == 403


def test_a_websocket_from_another_origin_is_refused(served_project):
    """Browsers let any page open a websocket anywhere; the UI's subscriptions come over /graphql."""
    _, dagster_url, _ = served_project
    websocket_url = dagster_url.replace("http://", "ws://") + "/graphql"
    with pytest.raises(InvalidStatus) as refusal:
        connect(websocket_url, origin=EVIL, subprotocols=["graphql-ws"], open_timeout=30)
    assert refusal.value.response.status_code == 403
    with connect(websocket_url, origin=dagster_url, subprotocols=["graphql-ws"], open_timeout=30) as websocket:
        websocket.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(websocket.recv(timeout=30))["type"] == "connection_ack"


def test_the_ui_own_queries_and_plain_gets_still_answer(served_project):
    _, dagster_url, _ = served_project
    port = dagster_url.rsplit(":", 1)[1]
    version = graphql(dagster_url, "{ version }")["version"]  # as a script on this machine asks: no Origin
    for origin in (dagster_url, f"http://localhost:{port}"):
        assert graphql(dagster_url, "{ version }", origin) == {"version": version}
    with urllib.request.urlopen(dagster_url + "/", timeout=60) as start_page:
        assert start_page.status == 200 and "<html" in start_page.read().decode()
        assert start_page.headers["X-Frame-Options"] == "SAMEORIGIN"  # no other site may frame the UI
    status, text = http(f"{dagster_url}/graphql?query={urllib.parse.quote('{ version }')}")
    assert status == 200 and "version" in json.loads(text)["data"]


def test_the_daemon_runs_schedules_and_sensors(served_project):
    """`galpipe ui` starts the daemon itself, as `dagster dev` did: its scheduler and sensor loops report healthy."""
    _, dagster_url, _ = served_project
    query = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"
    deadline, healthy = time.monotonic() + 180, set()
    while time.monotonic() < deadline and not {"SCHEDULER", "SENSOR"} <= healthy:
        statuses = graphql(dagster_url, query)["instance"]["daemonHealth"]["allDaemonStatuses"]
        healthy = {status["daemonType"] for status in statuses if status["healthy"]}
        time.sleep(2)
    assert {"SCHEDULER", "SENSOR"} <= healthy


def test_only_plain_queries_count_as_queries():
    assert only_queries("{ version }") and only_queries("query Runs { a } query Other { b }")
    assert not only_queries('mutation { deleteRun(runId: "x") { __typename } }')
    assert not only_queries("query A { a } mutation B { b }")  # operationName picks which one runs
    assert not only_queries("subscription { a }") and not only_queries("{ unclosed") and not only_queries("")


def test_a_port_in_use_is_reported_in_one_line(tmp_path, capsys):
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        busy_port = squatter.getsockname()[1]
        with pytest.raises(UiError, match=f"port {busy_port} on {HOST} is already in use"):
            with running_ui(tmp_path, "tiny", busy_port, free_ports(1)[0]):
                pass
        assert main(["ui", "--profile", "tiny", "--project-dir", str(tmp_path), "--dagster-port",
                     str(free_ports(1)[0]), "--mlflow-port", str(busy_port)]) == 2
    error = capsys.readouterr().err
    assert error.strip().splitlines() == [f"galpipe ui: error: port {busy_port} on {HOST} is already in use: "
                                          "pick another for the MLflow UI (--mlflow-port)"]
    assert not (tmp_path / ".galpipe_ui").exists()  # nothing was started


def test_the_mlflow_ui_shows_the_store_the_runs_went_to(tmp_path, monkeypatch):
    """The project's own SQLite file, or $MLFLOW_TRACKING_URI where set, as `galpipe run` logs to:
    a database is served by a local MLflow UI, a tracking server is its own UI (none is started)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_uri(tmp_path) == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://galpipe@127.0.0.1:5432/mlflow")
    assert mlflow_uri(tmp_path) == "postgresql://galpipe@127.0.0.1:5432/mlflow" and not is_tracking_server(mlflow_uri(tmp_path))
    assert mlflow_command(mlflow_uri(tmp_path), 5000)[2:4] == ["--backend-store-uri", "postgresql://galpipe@127.0.0.1:5432/mlflow"]
    nobody = f"http://{HOST}:{free_ports(1)[0]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", nobody)
    assert is_tracking_server(mlflow_uri(tmp_path))
    # A tracking server that does not answer is named at once, before Dagster is started.
    with pytest.raises(UiError, match=f"MLFLOW_TRACKING_URI={nobody}: no MLflow tracking server answers there"):
        with running_ui(tmp_path, "tiny", free_ports(1)[0], free_ports(1)[0]):
            pass
    assert not (tmp_path / ".galpipe_ui").exists()


def _served(url: str, written_for: str, served: str) -> str:
    """A link `galpipe run` wrote for the UI address it was given, on the UI this test serves (another port)."""
    assert url.startswith(written_for + "/"), url
    return served + url[len(written_for):]


def test_the_uis_tell_the_story_and_link_both_ways(served_project, tmp_path):
    """In a real browser: the evaluation table is a table of all its rows; a champion's link opens
    its MLflow model version; an MLflow run's Dagster link opens the run that made it; the Runs page
    names each stage's job; the README's screenshots can be taken from a first visit."""
    import pandas as pd
    from mlflow import MlflowClient

    from galpipe.links import FINETUNING_RUNS, dagster_ui_url, mlflow_results_view_url, mlflow_run_url, mlflow_ui_url
    from galpipe.screenshots import SCREENSHOTS, take_screenshots

    root, dagster_url, mlflow_url = served_project
    n_rows = len(pd.read_parquet(root / "data" / "tiny" / "evaluation_table.parquet"))
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    experiment_id = client.get_experiment_by_name("galpipe-tiny").experiment_id
    [run] = client.search_runs([experiment_id], FINETUNING_RUNS, max_results=1)
    with browser_page() as page:
        page_text(page, dagster_url + "/assets/evaluation_table", ["champion_rule", "most target labels"])
        table = page.get_by_role("row").filter(has=page.get_by_text("table", exact=True)).locator("table").first
        assert table.locator("tbody tr").count() == n_rows
        champion = page.get_by_role("link").filter(has_text="galpipe-tiny-bar-des/versions/").first.get_attribute("href")
        version = champion.rsplit("/", 1)[-1]
        shown = page_text(page, _served(champion, mlflow_ui_url(), mlflow_url), [f"Version {version}"])
        assert "galpipe-tiny-bar-des" in shown and "champion" in shown
        page_text(page, mlflow_run_url(experiment_id, run.info.run_id, mlflow_url), ["Made by Dagster run"])
        dagster_run = page.get_by_role("link", name=run.data.tags["dagster.run_id"][:8]).get_attribute("href")
        assert dagster_run.endswith("/runs/" + run.data.tags["dagster.run_id"])  # the link in the description
        page_text(page, _served(dagster_run, dagster_ui_url(), dagster_url), [run.data.tags["dagster.run_id"][:8],
                                                                             "finetuning_job"])
        # The saved runs view: only the fine-tuning runs, with their task, strategy and test accuracy.
        n_finetuning = len(client.search_runs([experiment_id], FINETUNING_RUNS, max_results=1000))
        view = page_text(page, mlflow_results_view_url(experiment_id, mlflow_url), [f"{n_finetuning} matching runs"])
        assert all(column in view for column in ("task", "strategy", "label_budget", "target_test_accuracy"))
        for job in ("data_job", "pretraining_job", "finetuning_job", "evaluation_job", "reevaluation_job",
                    "prediction_job"):
            page_text(page, f"{dagster_url}/runs?q%5B0%5D=job%3A{job}", [f"Job is {job}", "Success"])
        pictures = take_screenshots(page, dagster_url, mlflow_url, mlflow_results_view_url(experiment_id, mlflow_url),
                                    mlflow_run_url(experiment_id, run.info.run_id, mlflow_url), tmp_path)
    assert sorted(pictures) == sorted(SCREENSHOTS) and all(p.stat().st_size > 20_000 for p in pictures.values())
