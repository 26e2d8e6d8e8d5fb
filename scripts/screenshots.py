"""Screenshots of the Dagster and MLflow UIs of a project after `galpipe run`, for the README:
the asset graph, the evaluation_table asset with its learning curves, the MLflow runs and the
registered models with their champion alias.

    .venv/bin/python scripts/screenshots.py --project-dir . --profile small --out docs/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from galpipe.screenshots import DAGSTER_ASSET_GRAPH, MLFLOW_EXPERIMENTS, MLFLOW_MODELS, browser_page, page_text
from galpipe.ui import free_ports, running_ui

SETTLE_S = 2.0  # graphs and tables animate for a moment after their text appears
RUN_COLUMNS_TOGGLED = ["Dataset", "Source", "task", "label_budget", "strategy", "target_test_accuracy",
                       "target_test_roc_auc"]


def dagster_asset_graph(page, dagster_url: str, png: Path) -> None:
    page_text(page, dagster_url + DAGSTER_ASSET_GRAPH, ["Global asset lineage"], settle_s=SETTLE_S)
    if not page.get_by_text("evaluation_table").first.is_visible():
        page.keyboard.press("Alt+e")  # "Expand all groups": a fresh browser shows each group as one box
    page.get_by_text("evaluation_table").first.wait_for(timeout=30_000)
    # Hide the asset tree beside the graph (the button next to "Jump to…") to give the graph the room.
    page.locator("input[placeholder^='Jump to']").locator("xpath=following::button[1]").click()
    page.mouse.move(0, 0)  # no hover highlight on a node
    page.wait_for_timeout(SETTLE_S * 1000)
    page.screenshot(path=str(png))


def dagster_evaluation_table(page, dagster_url: str, png: Path) -> None:
    page_text(page, dagster_url + "/assets/evaluation_table", ["learning_curves"], settle_s=SETTLE_S)
    # The learning curves are markdown metadata (an embedded PNG): open it over the asset's page.
    page.get_by_role("row").filter(has_text="learning_curves").get_by_text("Show Markdown").click()
    page.get_by_role("dialog").locator("img").first.wait_for(timeout=30_000)
    page.add_style_tag(content="[role=dialog] img { max-width: 100%; height: auto; }")  # the whole figure
    page.wait_for_timeout(SETTLE_S * 1000)
    page.screenshot(path=str(png))


def mlflow_runs(page, mlflow_url: str, experiment: str, png: Path) -> None:
    page_text(page, mlflow_url + MLFLOW_EXPERIMENTS, [experiment])
    page.get_by_role("link", name=experiment, exact=True).click()  # experiment ids differ per project
    page.get_by_text("matching runs").first.wait_for(timeout=30_000)
    # Columns that tell the runs apart, instead of the empty Dataset and Source: each name toggles one.
    page.get_by_role("button", name="Columns").click()
    column_picker = page.get_by_role("dialog", name="Popover content")
    for column in RUN_COLUMNS_TOGGLED:
        column_picker.get_by_placeholder("Search columns").fill(column)
        column_picker.get_by_text(column, exact=True).first.click()
    page.keyboard.press("Escape")
    page.wait_for_timeout(SETTLE_S * 1000)
    page.screenshot(path=str(png))


def mlflow_models(page, mlflow_url: str, png: Path) -> None:
    page_text(page, mlflow_url + MLFLOW_MODELS, ["champion"], settle_s=SETTLE_S, screenshot=png)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project-dir", default=".", help="folder holding data/, mlruns/, .dagster_home/")
    parser.add_argument("--profile", default="small", help="the shipped project (or a project file) Dagster loads")
    parser.add_argument("--experiment", default="galpipe", help="MLflow experiment of the training runs")
    parser.add_argument("--out", default="docs/", help="folder for the PNG files")
    args = parser.parse_args(argv)
    png = {name: Path(args.out) / f"ui_{name}.png"
           for name in ("dagster_asset_graph", "dagster_evaluation_table", "mlflow_runs", "mlflow_models")}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with running_ui(args.project_dir, args.profile, *free_ports(2)) as (dagster_url, mlflow_url), \
            browser_page(width_px=1400, height_px=900) as page:
        dagster_asset_graph(page, dagster_url, png["dagster_asset_graph"])
        dagster_evaluation_table(page, dagster_url, png["dagster_evaluation_table"])
        mlflow_runs(page, mlflow_url, args.experiment, png["mlflow_runs"])
        mlflow_models(page, mlflow_url, png["mlflow_models"])
    print("\n".join(str(path) for path in png.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
