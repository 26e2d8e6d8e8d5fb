"""Addresses of pages in the Dagster and MLflow UIs, so that each can link to the other: a
training run's MLflow page names the Dagster run and asset that made it, an asset's metadata the
MLflow run and model version it made. The UIs' addresses come from the environment (`galpipe ui`
sets them to the ports it serves on), by default those `galpipe ui` uses; `ui` names another."""

from __future__ import annotations

import json
import os
import urllib.parse

DAGSTER_UI_VARIABLE = "GALPIPE_DAGSTER_UI_URL"
MLFLOW_UI_VARIABLE = "GALPIPE_MLFLOW_UI_URL"
DEFAULT_DAGSTER_UI = "http://127.0.0.1:3000"
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"
# The MLflow experiment view galpipe saves (an experiment tag MLflow's UI reads as a shared view):
# the runs table with the columns that tell fine-tuning runs apart and their test metrics.
RESULTS_VIEW_KEY = "galpipe-results"
STAGE_TAG, FINETUNING = "galpipe.stage", "finetuning"  # each training run's stage: pretraining or finetuning
FINETUNING_RUNS = f"tags.`{STAGE_TAG}` = '{FINETUNING}'"  # an MLflow search filter
RESULTS_VIEW_TAG = f"mlflow.sharedViewState.{RESULTS_VIEW_KEY}"
RESULTS_COLUMNS = (["params.`task`", "params.`strategy`", "params.`selection`", "params.`label_budget`",
                    "params.`seed`", "metrics.`target_test_accuracy`", "metrics.`target_test_roc_auc`"])


def dagster_ui_url() -> str:
    return os.environ.get(DAGSTER_UI_VARIABLE, DEFAULT_DAGSTER_UI).rstrip("/")


def mlflow_ui_url() -> str:
    return os.environ.get(MLFLOW_UI_VARIABLE, DEFAULT_MLFLOW_UI).rstrip("/")


def dagster_run_url(run_id: str, ui: str | None = None) -> str:
    return f"{ui or dagster_ui_url()}/runs/{run_id}"


def dagster_asset_url(asset_path: list[str], partition: str = "", ui: str | None = None) -> str:
    url = f"{ui or dagster_ui_url()}/assets/{'/'.join(urllib.parse.quote(p) for p in asset_path)}"
    return url + (f"?partition={urllib.parse.quote(partition)}" if partition else "")


def mlflow_run_url(experiment_id: str, run_id: str, ui: str | None = None) -> str:
    return f"{ui or mlflow_ui_url()}/#/experiments/{experiment_id}/runs/{run_id}"


def mlflow_model_version_url(name: str, version: str, ui: str | None = None) -> str:
    return f"{ui or mlflow_ui_url()}/#/models/{urllib.parse.quote(name)}/versions/{version}"


def mlflow_results_view_url(experiment_id: str, ui: str | None = None) -> str:
    return f"{ui or mlflow_ui_url()}/#/experiments/{experiment_id}/runs?viewStateShareKey={RESULTS_VIEW_KEY}"


def results_view_state() -> str:
    """The saved view: the results columns, best test accuracy first, fine-tuning runs only."""
    return json.dumps({"selectedColumns": RESULTS_COLUMNS, "orderByKey": "metrics.`target_test_accuracy`",
                       "orderByAsc": False, "searchFilter": FINETUNING_RUNS})
