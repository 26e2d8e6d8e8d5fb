"""Each task's champion re-evaluated every day: the `champion_evaluation` asset, its regression
check, `reevaluation_job` and the `daily_reevaluation` schedule."""

import pandas as pd
from dagster import (AssetCheckResult, AssetCheckSeverity, AssetExecutionContext, AssetIn, AssetKey,
                     AssetSelection, DefaultScheduleStatus, MetadataValue, ScheduleDefinition, asset, asset_check,
                     define_asset_job)

from galpipe.defs.metadata import image_md, run_tags
from galpipe.defs.model_assets import inputs_path, sorted_by_row
from galpipe.defs.resources import GalpipeSettings
from galpipe.evaluation import binary_metrics, plot_roc_curves, raised_baseline, regressions
from galpipe.gallery import make_gallery, pick_gallery_galaxies
from galpipe.labels import new_label_flag
from galpipe.preprocessing import load_model_inputs
from galpipe.tracking import load_registered_model, model_version, with_retry
from galpipe.training import predict_proba
from galpipe.transfer import labelled_sample

OPERATIONS_GROUP = "operations"
WATCHED_METRICS = ("accuracy", "roc_auc")  # the regression check compares these


@asset(group_name=OPERATIONS_GROUP, deps=["evaluation_table"],
       ins={"matched_catalog": AssetIn(), "target_inputs": AssetIn(key=AssetKey(["target", "model_inputs"])),
            "source_cutouts": AssetIn(key=AssetKey(["source", "raw_cutouts"]))},
       required_resource_keys={"settings", "mlflow", "source_survey", "target_survey"},
       description="Each task's `champion` re-evaluated on the current target test set (new labels "
                   "included), logged as an MLflow evaluation run linked to the model version, with ROC "
                   "curves and a gallery of test galaxies with their predicted probabilities.")
def champion_evaluation(context: AssetExecutionContext, matched_catalog: pd.DataFrame, target_inputs: pd.DataFrame,
                        source_cutouts: pd.DataFrame) -> pd.DataFrame:
    settings: GalpipeSettings = context.resources.settings
    tracker = context.resources.mlflow.tracker()
    survey = context.resources.target_survey.instrument
    x = load_model_inputs(inputs_path(settings, "target"))
    test_rows = matched_catalog[matched_catalog.split == "test"]
    good = target_inputs[target_inputs.status == "ok"].set_index("object_id").row
    test_ids = [i for i in test_rows.object_id if i in good.index]
    probabilities = pd.DataFrame(index=pd.Index(test_ids, name="object_id"))
    plots = settings.run_dir / "plots"
    rows, curves = [], {}
    for task in settings.tasks:
        version = model_version(tracker.tracking_uri, f"models:/galpipe-{task}-{survey}@champion")
        uri = f"models:/{version.name}/{version.version}"
        probabilities[f"p_{task}"] = predict_proba(load_registered_model(tracker.tracking_uri, uri),
                                                   x[good[test_ids].to_numpy()])
        test = sorted_by_row(labelled_sample(test_rows, target_inputs, task))
        p_test = probabilities.loc[test.object_id, f"p_{task}"].to_numpy()
        metrics = binary_metrics(test.label, p_test)
        curves[task] = (test.label, p_test)
        flag = new_label_flag(task)
        new_sample = labelled_sample(test_rows[test_rows[flag]] if flag in test_rows else test_rows.iloc[:0],
                                     target_inputs, task)
        params = {"task": task, "model_uri": uri, "n_test": len(test), "n_test_new_labels": len(new_sample)}
        tags = {**run_tags(context), "galpipe.kind": "reevaluation", "evaluated_model": uri,
                "evaluated_model_run_id": version.run_id}
        with tracker.run(f"reevaluate-{task}", tags, params) as run_id:
            tracker.log_metrics(run_id, {f"test_{k}": v for k, v in metrics.items()})
            if len(new_sample):
                p_new = probabilities.loc[new_sample.object_id, f"p_{task}"].to_numpy()
                tracker.log_metrics(run_id, {f"new_labels_{k}": v
                                             for k, v in binary_metrics(new_sample.label, p_new).items()})
            roc = plot_roc_curves({task: curves[task]}, plots / f"{run_id}_roc.png", f"{task} champion, target test")
            tracker.log_artifact(run_id, roc, "plots")
        with_retry(lambda: tracker.client.set_model_version_tag(version.name, version.version,
                                                                "last_reevaluation_run_id", run_id))
        rows.append({"task": task, "registered_model": version.name, "model_version": version.version,
                     "mlflow_run_id": run_id, **metrics, "n_new_labels": len(new_sample)})
    table = pd.DataFrame(rows)
    roc = plot_roc_curves(curves, settings.run_dir / "champion_roc.png", f"champions on {survey.upper()} test set")
    galaxies = pick_gallery_galaxies(test_rows[test_rows.object_id.isin(test_ids)], settings.tasks, per_class=2)
    ok_source = source_cutouts[source_cutouts.status == "ok"]
    gallery = make_gallery(galaxies, dict(zip(ok_source.object_id, ok_source.path)), settings.tasks,
                           settings.run_dir / "champion_gallery.png", context.resources.source_survey.instrument,
                           survey, probabilities)
    with tracker.run("champion-pictures", {**run_tags(context), "galpipe.kind": "reevaluation"}, {}) as run_id:
        tracker.log_artifact(run_id, roc, "plots")
        tracker.log_artifact(run_id, gallery, "plots")
    context.add_output_metadata({
        "table": MetadataValue.md(table.drop(columns=["mlflow_run_id"]).round(3).to_markdown(index=False)),
        "roc_curves": image_md(roc), "gallery": image_md(gallery)})
    return table


@asset_check(asset=champion_evaluation, required_resource_keys={"settings", "mlflow"},
             description="Fails when a champion's test accuracy or ROC AUC is more than the settings' "
                         "regression_tolerance below its accepted value: the best value of a passing "
                         "evaluation so far, kept as tags of the registered model.")
def champion_has_not_regressed(context, champion_evaluation: pd.DataFrame) -> AssetCheckResult:
    settings: GalpipeSettings = context.resources.settings
    client = context.resources.mlflow.tracker().client
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
