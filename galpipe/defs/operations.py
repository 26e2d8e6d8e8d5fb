"""Operating galpipe day to day: each task's champion re-evaluated every day (an asset, a
regression check, a job and its schedule), a sensor that turns new target labels into
fine-tuning and evaluation, and batch prediction of the whole target survey in chunks."""

import base64
import hashlib
import json

import numpy as np
import pandas as pd
from dagster import (AssetCheckResult, AssetCheckSeverity, AssetExecutionContext, AssetIn, AssetKey,
                     AssetSelection, DefaultScheduleStatus, DefaultSensorStatus, MetadataValue, MultiPartitionKey,
                     RunRequest, ScheduleDefinition, SensorResult, SkipReason, StaticPartitionsDefinition, asset,
                     asset_check, define_asset_job, sensor)
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey

from galpipe.catalogs import CatalogError
from galpipe.defs.model_assets import _sorted, _tags, inputs_path
from galpipe.defs.resources import GalpipeSettings
from galpipe.evaluation import binary_metrics, plot_roc_curves
from galpipe.gallery import make_gallery, pick_gallery_galaxies
from galpipe.labels import ORIGIN, fingerprints, tasks_in
from galpipe.prediction import load_classifier, model_uris, predict_cutouts
from galpipe.preprocessing import load_model_inputs
from galpipe.tracking import load_registered_model, model_version, with_retry
from galpipe.training import predict_proba
from galpipe.transfer import labelled_sample

OPERATIONS_GROUP = "operations"
WATCHED_METRICS = ("accuracy", "roc_auc")  # the regression check compares these
N_PREDICTION_CHUNKS = 8
prediction_chunks = StaticPartitionsDefinition([f"chunk-{k:02d}" for k in range(N_PREDICTION_CHUNKS)])


def _png_md(path) -> MetadataValue:
    return MetadataValue.md(f"![{path.name}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})")


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
        test = _sorted(labelled_sample(test_rows, target_inputs, task))
        p_test = probabilities.loc[test.object_id, f"p_{task}"].to_numpy()
        metrics = binary_metrics(test.label, p_test)
        curves[task] = (test.label, p_test)
        new = test_rows[test_rows.label_origin == ORIGIN]
        new_sample = labelled_sample(new, target_inputs, task)
        params = {"task": task, "model_uri": uri, "n_test": len(test), "n_test_new_labels": len(new_sample)}
        tags = {**_tags(context), "galpipe.kind": "reevaluation", "evaluated_model": uri,
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
    with tracker.run("champion-pictures", {**_tags(context), "galpipe.kind": "reevaluation"}, {}) as run_id:
        tracker.log_artifact(run_id, roc, "plots")
        tracker.log_artifact(run_id, gallery, "plots")
    context.add_output_metadata({
        "table": MetadataValue.md(table.drop(columns=["mlflow_run_id"]).round(3).to_markdown(index=False)),
        "roc_curves": _png_md(roc), "gallery": _png_md(gallery)})
    return table


@asset_check(asset=champion_evaluation, required_resource_keys={"settings", "mlflow"},
             description="Fails when a champion's test accuracy or ROC AUC drops below the last accepted "
                         "value by more than the settings' regression_tolerance; a passing value becomes "
                         "the accepted one (kept as tags of the registered model).")
def champion_has_not_regressed(context, champion_evaluation: pd.DataFrame) -> AssetCheckResult:
    settings: GalpipeSettings = context.resources.settings
    client = context.resources.mlflow.tracker().client
    tolerance = settings.regression_tolerance
    regressions, accepted = [], {}
    for row in champion_evaluation.itertuples(index=False):
        tags = with_retry(lambda: client.get_registered_model(row.registered_model)).tags
        dropped = [f"{row.task}: {m} {getattr(row, m):.3f} is below the accepted {float(tags[f'accepted_{m}']):.3f} "
                   f"(version {tags.get('accepted_version', '?')}) by more than {tolerance} "
                   f"[now version {row.model_version}]"
                   for m in WATCHED_METRICS
                   if f"accepted_{m}" in tags and getattr(row, m) < float(tags[f"accepted_{m}"]) - tolerance]
        regressions += dropped
        if not dropped:
            for m in WATCHED_METRICS:
                if np.isfinite(getattr(row, m)):
                    with_retry(lambda: client.set_registered_model_tag(row.registered_model, f"accepted_{m}",
                                                                       f"{getattr(row, m):.6f}"))
            with_retry(lambda: client.set_registered_model_tag(row.registered_model, "accepted_version",
                                                               row.model_version))
            accepted[row.task] = {m: round(float(getattr(row, m)), 4) for m in WATCHED_METRICS}
    return AssetCheckResult(passed=not regressions, severity=AssetCheckSeverity.ERROR,
                            description="; ".join(regressions) or "no champion regressed",
                            metadata={"regressions": MetadataValue.json(regressions),
                                      "accepted": MetadataValue.json(accepted), "tolerance": tolerance})


reevaluation_job = define_asset_job("reevaluation_job", selection=AssetSelection.assets(champion_evaluation),
                                    description="Re-evaluate every task's champion and check it has not regressed.")
daily_reevaluation = ScheduleDefinition(name="daily_reevaluation", job=reevaluation_job, cron_schedule="0 6 * * *",
                                        execution_timezone="UTC", default_status=DefaultScheduleStatus.RUNNING)

FINETUNED, MATCHED = AssetKey("finetuned_models"), AssetKey("matched_catalog")
AFTER_NEW_LABELS = [AssetKey("evaluation_table"), AssetKey("champion_evaluation")]


@sensor(name="new_target_labels", minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING,
        asset_selection=AssetSelection.assets(MATCHED, FINETUNED, *AFTER_NEW_LABELS),
        description="Watches data/<profile>/labels/ for new or changed label files and requests, in "
                    "lineage order, the matched catalogue, the fine-tuning partitions of the tasks they "
                    "label (the profile's budgets), the evaluation table and the champions' re-evaluation.")
def new_target_labels(context, settings: GalpipeSettings):
    seen = json.loads(context.cursor) if context.cursor else {}
    current = fingerprints(settings.labels_dir)
    changed = sorted(name for name, stamp in current.items() if seen.get(name) != stamp)
    if not changed:
        return SkipReason(f"no new or changed label files in {settings.labels_dir}")
    try:
        tasks = sorted({t for name in changed for t in tasks_in(settings.labels_dir / name, settings.tasks)})
    except (CatalogError, OSError) as err:
        return SkipReason(f"cannot read a label file: {err}")  # cursor kept: retried once it is fixed
    if not tasks:
        return SensorResult(skip_reason=f"{changed} hold no column of the tasks {settings.tasks}",
                            cursor=json.dumps(current))
    wanted = {AssetKeyPartitionKey(MATCHED)} | {AssetKeyPartitionKey(key) for key in AFTER_NEW_LABELS}
    wanted |= {AssetKeyPartitionKey(FINETUNED, MultiPartitionKey({"task": t, "budget": b}))
               for t in tasks for b in settings.get_profile().label_budgets}
    # An asset backfill (not plain runs): Dagster launches each partition after what it depends on.
    subset = AssetGraphSubset.from_asset_partition_set(wanted, context.repository_def.asset_graph)
    return SensorResult(run_requests=[RunRequest.for_asset_graph_subset(subset, tags={"galpipe/label_files":
                                                                                      ",".join(changed)})],
                        cursor=json.dumps(current))


def chunk_of(object_ids: pd.Series) -> np.ndarray:
    """A fixed chunk per object id (by hash), so a growing catalogue never moves an object."""
    return np.array([int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:4], "big") % N_PREDICTION_CHUNKS
                     for i in object_ids], dtype=int)


@asset(key=AssetKey(["target", "morphology"]), group_name=OPERATIONS_GROUP, partitions_def=prediction_chunks,
       deps=["evaluation_table"], ins={"raw_cutouts": AssetIn(key=AssetKey(["target", "raw_cutouts"]))},
       required_resource_keys={"settings", "mlflow", "target_survey"},
       description="The whole target survey classified by the champions, one partition per chunk of the "
                   "catalogue (by object-id hash): a backfill over the chunks spreads over a cluster's "
                   "workers. Parquet per chunk: object_id, path, p_<task>, <task>.")
def target_morphology(context: AssetExecutionContext, raw_cutouts: pd.DataFrame) -> dict:
    settings: GalpipeSettings = context.resources.settings
    tracker = context.resources.mlflow.tracker()
    chunk = prediction_chunks.get_partition_keys().index(context.partition_key)
    rows = raw_cutouts[(raw_cutouts.status == "ok") & (chunk_of(raw_cutouts.object_id) == chunk)]
    classifiers = [load_classifier(tracker.tracking_uri, uri)
                   for uri in model_uris("champion", settings.tasks, context.resources.target_survey.instrument)]
    out = settings.run_dir / "target" / "morphology" / f"{context.partition_key}.parquet"
    summary = predict_cutouts(classifiers, rows[["object_id", "path"]], out, progress=False,
                              on_failure=lambda r: context.log.warning(f"skipped {r['path']}: {r['reason']}"))
    context.add_output_metadata({"path": str(out), "n_written": summary.n_written,
                                 "n_failed": len(summary.failures),
                                 "galaxies_per_second": round(summary.galaxies_per_second, 1)})
    return {"path": str(out), "n_written": summary.n_written, "n_failed": len(summary.failures),
            "models": [k.model_uri for k in classifiers]}


OPERATIONS_ASSETS = [champion_evaluation, target_morphology]
OPERATIONS_CHECKS = [champion_has_not_regressed]
JOBS = [reevaluation_job]
SCHEDULES = [daily_reevaluation]
SENSORS = [new_target_labels]
