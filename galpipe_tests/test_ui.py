"""`galpipe ui` serves a project: in headless Chromium, Dagster lists the assets and MLflow the
registered models with their champion alias; both servers are gone afterwards; a busy port is
reported in one line."""

import argparse
import socket

import pytest

from galpipe.screenshots import DAGSTER_ASSET_LIST, MLFLOW_MODELS, browser_page, page_text
from galpipe.simulation.population import TASKS
from galpipe.ui import HOST, UiError, add_arguments, check_port_free, free_ports, run_ui, running_ui

ASSET_NAMES = ["matched_catalog", "pretrained_model", "finetuned_models", "evaluation_table"]


def test_ui_shows_assets_and_registered_models(tiny_project):
    root, exit_code = tiny_project
    assert exit_code == 0
    dagster_port, mlflow_port = free_ports(2)
    model_names = [f"galpipe-{task}-des" for task in TASKS]
    with running_ui(root, "tiny", dagster_port, mlflow_port) as (dagster_url, mlflow_url), browser_page() as page:
        # page_text fails with a timeout naming the text it did not find.
        assets = page_text(page, dagster_url + DAGSTER_ASSET_LIST, ASSET_NAMES)
        models = page_text(page, mlflow_url + MLFLOW_MODELS, [*model_names, "champion"])
    assert all(name in assets for name in ASSET_NAMES)
    assert all(name in models for name in model_names)
    assert models.count("champion") == len(TASKS)
    assert (root / ".galpipe_ui" / "dagster.log").stat().st_size > 0
    # Both process groups are stopped: their ports are free again.
    check_port_free(dagster_port, "Dagster UI")
    check_port_free(mlflow_port, "MLflow UI")


def test_a_port_in_use_is_reported_in_one_line(tmp_path, capsys):
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        busy_port = squatter.getsockname()[1]
        with pytest.raises(UiError, match=f"port {busy_port} on {HOST} is already in use"):
            with running_ui(tmp_path, "tiny", busy_port, free_ports(1)[0]):
                pass
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        args = parser.parse_args(["--project-dir", str(tmp_path), "--dagster-port", str(free_ports(1)[0]),
                                  "--mlflow-port", str(busy_port)])
        assert run_ui(args) == 2
    error = capsys.readouterr().err
    assert error.strip().splitlines() == [f"galpipe ui: error: port {busy_port} on {HOST} is already in use: "
                                          "pick another for the MLflow UI (--mlflow-port)"]
    assert not (tmp_path / ".galpipe_ui").exists()  # nothing was started
