"""Screenshots of the Dagster and MLflow UIs of a project after `galpipe run`, for the README, from
a first visit (a fresh browser): the asset graph, the evaluation_table asset with its table and
champions, the MLflow runs view galpipe saves, one fine-tuning run linking back to Dagster, and the
registered models with their champion alias. The UI test takes the same pictures of the tiny project.

    .venv/bin/python scripts/screenshots.py --project-dir . --profile small --out docs/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlflow import MlflowClient

from galpipe.links import FINETUNING_RUNS, mlflow_results_view_url, mlflow_run_url
from galpipe.project import load_project
from galpipe.screenshots import browser_page, take_screenshots
from galpipe.ui import free_ports, running_ui


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project-dir", default=".", help="folder holding data/, mlruns/, .dagster_home/")
    parser.add_argument("--profile", default="small", help="the shipped project (or a project file) Dagster loads")
    parser.add_argument("--out", default="docs/", help="folder for the PNG files")
    args = parser.parse_args(argv)
    client = MlflowClient(f"sqlite:///{Path(args.project_dir).resolve() / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(load_project(args.profile).experiment)
    [run] = client.search_runs([experiment.experiment_id], FINETUNING_RUNS,
                               order_by=["metrics.target_test_accuracy DESC"], max_results=1)
    with running_ui(args.project_dir, args.profile, *free_ports(2)) as (dagster_url, mlflow_url), \
            browser_page(width_px=1400, height_px=900) as page:
        png = take_screenshots(page, dagster_url, mlflow_url, mlflow_results_view_url(experiment.experiment_id, mlflow_url),
                               mlflow_run_url(experiment.experiment_id, run.info.run_id, mlflow_url), Path(args.out))
    print("\n".join(str(path) for path in png.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
