"""Look at the Dagster and MLflow UIs with headless Chromium (Playwright): open a page, wait for texts
to appear, save a screenshot. Used by the UI test and by scripts/screenshots.py. Uses the system's
Chromium, so no browser is downloaded."""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# Pages of each UI (single-page apps: MLflow routes after '#').
DAGSTER_ASSET_LIST = "/assets"
DAGSTER_ASSET_GRAPH = "/asset-groups"  # "Global asset lineage"
MLFLOW_EXPERIMENTS = "/#/experiments"
MLFLOW_MODELS = "/#/models"

# Settings the UIs keep in the browser's local storage, preset so that no first-visit popup covers
# the page (Dagster's community sign-up, MLflow's registry promotion and assistant panel) and MLflow
# shows experiments as model training, not GenAI.
BROWSER_SETTINGS = {
    "communityNux": True,
    "_mlflow_model_registry_promo_modal_dismissed_v1": True,
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
    "mlflow.assistant.panelOpen_v1": False,
    "mlflow.workflowType_v1": "machine_learning",
}


@contextmanager
def browser_page(width_px: int = 1400, height_px: int = 900):
    """One headless Chromium with one tab, reused for every page (a launch costs seconds)."""
    from playwright.sync_api import sync_playwright  # a dev dependency: only tests and scripts need it

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width_px, "height": height_px})
            page.add_init_script("".join(f"localStorage.setItem({json.dumps(key)}, {json.dumps(json.dumps(value))});"
                                         for key, value in BROWSER_SETTINGS.items()))
            yield page
        finally:
            browser.close()


def page_text(page, url: str, expected_texts=(), timeout_s: float = 60.0, screenshot: Path | None = None,
              settle_s: float = 0.0) -> str:
    """Open `url`, wait until each expected text is visible, optionally save a full-page PNG, and
    return the page's visible text. Raises playwright's TimeoutError naming the missing text."""
    page.goto(url)
    for text in expected_texts:
        page.get_by_text(text).first.wait_for(state="visible", timeout=timeout_s * 1000)
    if settle_s:  # let graphs finish their layout animation before a screenshot
        page.wait_for_timeout(settle_s * 1000)
    if screenshot is not None:
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    return page.inner_text("body")


SETTLE_S = 2.0  # graphs and tables animate for a moment after their text appears
SCREENSHOTS = ("dagster_asset_graph", "dagster_evaluation_table", "mlflow_runs", "mlflow_run", "mlflow_models")


def dagster_asset_graph(page, dagster_url: str, png: Path) -> None:
    page_text(page, dagster_url + DAGSTER_ASSET_GRAPH, ["Global asset lineage"], settle_s=SETTLE_S)
    if not page.get_by_text("evaluation_table").first.is_visible():
        page.keyboard.press("Alt+e")  # "Expand all groups": a first visit shows each group as one box
    page.get_by_text("evaluation_table").first.wait_for(timeout=30_000)
    # Hide the asset tree beside the graph (the button next to "Jump to…") to give the graph the room.
    page.locator("input[placeholder^='Jump to']").locator("xpath=following::button[1]").click()
    page.mouse.move(0, 0)  # no hover highlight on a node
    page.wait_for_timeout(SETTLE_S * 1000)
    page.screenshot(path=str(png))


def dagster_evaluation_table(page, dagster_url: str, png: Path) -> None:
    """The evaluation table as the asset's page shows it: a table, the champions below it."""
    page_text(page, dagster_url + "/assets/evaluation_table", ["champion_rule"], settle_s=SETTLE_S)
    page.get_by_text("Filter metadata keys").or_(page.get_by_placeholder("Filter metadata keys")).first \
        .scroll_into_view_if_needed()  # the table's top: description and status above it, champions below
    page.wait_for_timeout(SETTLE_S * 1000)
    page.screenshot(path=str(png))


def mlflow_runs(page, results_view_url: str, png: Path) -> None:
    """The experiment's saved runs view (galpipe.links): task, strategy, budget, seed, test metrics."""
    page_text(page, results_view_url, ["matching runs", "target_test_accuracy"], settle_s=SETTLE_S, screenshot=png)


def mlflow_run(page, run_url: str, png: Path) -> None:
    """One fine-tuning run, its description linking to the Dagster run and asset that made it."""
    page_text(page, run_url, ["Made by Dagster run"], settle_s=SETTLE_S, screenshot=png)


def mlflow_models(page, mlflow_url: str, png: Path) -> None:
    page_text(page, mlflow_url + MLFLOW_MODELS, ["champion"], settle_s=SETTLE_S, screenshot=png)


def take_screenshots(page, dagster_url: str, mlflow_url: str, results_view_url: str, run_url: str,
                     out_dir: Path) -> dict[str, Path]:
    """The README's pictures of both UIs, from a first visit (a fresh browser): name -> PNG."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    png = {name: Path(out_dir) / f"ui_{name}.png" for name in SCREENSHOTS}
    dagster_asset_graph(page, dagster_url, png["dagster_asset_graph"])
    dagster_evaluation_table(page, dagster_url, png["dagster_evaluation_table"])
    mlflow_runs(page, results_view_url, png["mlflow_runs"])
    mlflow_run(page, run_url, png["mlflow_run"])
    mlflow_models(page, mlflow_url, png["mlflow_models"])
    return png
