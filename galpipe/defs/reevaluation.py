"""Each task's champion re-evaluated every day: the `champion_evaluation` asset, its regression
check, `reevaluation_job` and the `daily_reevaluation` schedule."""

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetSelection,
    DefaultScheduleStatus,
    MetadataValue,
    ScheduleDefinition,
    asset,
    asset_check,
    define_asset_job,
)

from galpipe.champions import reevaluate_champions
from galpipe.defs.assets import project_gallery
from galpipe.defs.metadata import as_table, image_md, run_tags
from galpipe.defs.resources import GalpipeSettings
from galpipe.evaluation import plot_roc_curves, raised_baseline, regressions
from galpipe.links import mlflow_run_url
from galpipe.preprocessing import ModelInputs
from galpipe.tracking import registered_model_name, with_retry

OPERATIONS_GROUP = "operations"
WATCHED_METRICS = ("accuracy", "roc_auc")  # the regression check compares these


@asset(group_name=OPERATIONS_GROUP, deps=["evaluation_table"],
       ins={"matched_catalog": AssetIn(), "target_inputs": AssetIn(key=AssetKey("target_model_inputs")),
            "source_cutouts": AssetIn(key=AssetKey("source_raw_cutouts")),
            "source_catalog": AssetIn(key=AssetKey("source_catalog")),
            "target_catalog": AssetIn(key=AssetKey("target_catalog"))},
       required_resource_keys={"settings", "mlflow", "source_survey", "target_survey"},
       description="Each task's `champion` re-evaluated on the current target test set (new labels "
                   "included), logged as an MLflow evaluation run linked to the model version, with ROC "
                   "curves and a gallery of test galaxies with their predicted probabilities.")
def champion_evaluation(context: AssetExecutionContext, matched_catalog: pd.DataFrame, target_inputs: ModelInputs,
                        source_cutouts: pd.DataFrame, source_catalog: pd.DataFrame,
                        target_catalog: pd.DataFrame) -> pd.DataFrame:
    settings: GalpipeSettings = context.resources.settings
    tracker = context.resources.mlflow.tracker(settings)
    survey = context.resources.target_survey.name
    test_rows = matched_catalog[matched_catalog.split == "test"]
    table, probabilities, curves = reevaluate_champions(
        tracker, {task: registered_model_name(settings.experiment_name, task, survey) for task in settings.tasks},
        target_inputs.array(), test_rows, target_inputs.index, settings.run_dir / "plots", run_tags(context))
    roc = plot_roc_curves(curves, settings.run_dir / "champion_roc.png", f"champions on {survey.upper()} test set")
    gallery, _ = project_gallery(context, test_rows[test_rows.object_id.isin(probabilities.index)], source_cutouts,
                                 source_catalog, target_catalog, settings.run_dir / "champion_gallery.png", probabilities)
    with tracker.run("champion-pictures", {**run_tags(context), "galpipe.kind": "reevaluation"}, {}) as run_id:
        tracker.log_artifact(run_id, roc, "plots")
        tracker.log_artifact(run_id, gallery, "plots")
    context.add_output_metadata({"table": as_table(table.drop(columns=["mlflow_run_id"])),
                                 **_run_links(table, tracker.experiment_id),
                                 "roc_curves": image_md(roc), "gallery": image_md(gallery)})
    return table


def _run_links(table: pd.DataFrame, experiment_id: str) -> dict:
    """Each task's evaluation run in MLflow, as a link."""
    return {f"mlflow_run_{row.task}": MetadataValue.url(mlflow_run_url(experiment_id, row.mlflow_run_id))
            for row in table.itertuples()}


@asset_check(asset=champion_evaluation, required_resource_keys={"settings", "mlflow"},
             description="Fails when a champion's test accuracy or ROC AUC is more than the settings' "
                         "regression_tolerance below its accepted value: the best value of a passing "
                         "evaluation so far, kept as tags of the registered model.")
def champion_has_not_regressed(context, champion_evaluation: pd.DataFrame) -> AssetCheckResult:
    settings: GalpipeSettings = context.resources.settings
    client = context.resources.mlflow.tracker(settings).client
    found, accepted_now = [], {}
    for row in champion_evaluation.itertuples(index=False):
        tags = with_retry(lambda: client.get_registered_model(row.registered_model)).tags
        accepted = {m: float(tags[f"accepted_{m}"]) for m in WATCHED_METRICS if f"accepted_{m}" in tags}
        metrics = {m: float(getattr(row, m)) for m in WATCHED_METRICS}
        dropped = regressions(metrics, accepted, settings.regression_tolerance)
        found += [f"{row.task} (version {row.model_version}): {message}" for message in dropped]
        if not dropped:
            accepted = raised_baseline(metrics, accepted)
            for m, value in accepted.items():
                with_retry(lambda: client.set_registered_model_tag(row.registered_model, f"accepted_{m}",
                                                                   f"{value:.6f}"))
        accepted_now[row.task] = {m: round(v, 4) for m, v in accepted.items()}
    return AssetCheckResult(passed=not found, severity=AssetCheckSeverity.ERROR,
                            description="; ".join(found) or "no champion regressed",
                            metadata={"regressions": MetadataValue.json(found),
                                      "accepted": MetadataValue.json(accepted_now),
                                      "tolerance": settings.regression_tolerance})


reevaluation_job = define_asset_job("reevaluation_job", selection=AssetSelection.assets(champion_evaluation),
                                    description="Re-evaluate every task's champion and check it has not regressed.")
daily_reevaluation = ScheduleDefinition(name="daily_reevaluation", job=reevaluation_job, cron_schedule="0 6 * * *",
                                        execution_timezone="UTC", default_status=DefaultScheduleStatus.RUNNING)
