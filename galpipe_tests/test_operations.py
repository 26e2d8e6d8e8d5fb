"""Day-to-day operation on the tiny project after `galpipe run`: the daily schedule, the sensor
for new target labels, the champions' re-evaluation and its regression check (which must fail
on a planted regression), and batch prediction over catalogue chunks."""

import datetime
import os

import numpy as np
import pandas as pd
import pytest
import torch
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    Definitions,
    MetadataValue,
    MultiPartitionKey,
    build_schedule_context,
    build_sensor_context,
    materialize,
)
from dagster._core.definitions.events import AssetKeyPartitionKey
from mlflow import MlflowClient

from galpipe.champions import reevaluate_champions
from galpipe.definitions import ALL_CHECKS, all_assets, build_resources
from galpipe.defs.reevaluation import daily_reevaluation, reevaluation_job
from galpipe.defs.resources import MlflowTracking
from galpipe.defs.sensors import new_target_labels
from galpipe.labels import label_files_state
from galpipe.tracking import Tracker, load_registered_model
from galpipe.training import predict_proba


def negated(model):
    """A planted regression: the champion with its logits turned round (the last layer negated, of
    each seed where the champion is a seed ensemble)."""
    with torch.no_grad():
        for classifier in getattr(model, "members", [model]):
            classifier.head[-1].weight.neg_()
            classifier.head[-1].bias.neg_()
    return model


def _resources(root):
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    return build_resources("tiny", data_dir=str(root / "data"),
                           mlflow=MlflowTracking(tracking_uri=uri, artifact_root=str(root / "mlruns" / "artifacts")))


def _reevaluate(root):
    cwd = os.getcwd()
    os.chdir(root)  # a project's manifests hold paths relative to the project folder, as `galpipe run` runs there
    try:
        with DagsterInstance.ephemeral() as instance:
            result = materialize([*all_assets("tiny"), *ALL_CHECKS], selection=[AssetKey("champion_evaluation")],
                                 resources=_resources(root), instance=instance, raise_on_error=False)
    finally:
        os.chdir(cwd)
    (check,) = result.get_asset_check_evaluations()
    return result, check


def test_the_schedule_requests_the_reevaluation_job_daily():
    context = build_schedule_context(scheduled_execution_time=datetime.datetime(2026, 11, 25, 6, 0))
    (request,) = daily_reevaluation.evaluate_tick(context).run_requests  # one run of the job per tick
    assert daily_reevaluation.job_name == "reevaluation_job"
    assert daily_reevaluation.cron_schedule == "0 6 * * *"  # every day at 06:00
    assert AssetKey("champion_evaluation") in reevaluation_job.selection.resolve(all_assets("tiny"))


def _settled(path):
    """Age a label file past the settle time, as if written a minute ago."""
    a_minute_ago = path.stat().st_mtime - 60
    os.utime(path, (a_minute_ago, a_minute_ago))
    return path


def test_new_label_files_request_the_finetuning_partitions_they_feed(tmp_path):
    data_dir = tmp_path / "data"  # the sensor only reads the labels folder and the instance
    labels = data_dir / "tiny" / "labels"
    labels.mkdir(parents=True)
    resources = build_resources("tiny", data_dir=str(data_dir))
    settings = resources["settings"]
    defs = Definitions(assets=all_assets("tiny"), sensors=[new_target_labels], resources=resources)
    with DagsterInstance.ephemeral() as instance:
        def evaluate(cursor):
            context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                           resources={"settings": settings})
            return new_target_labels.evaluate_tick(context)

        def requested_tasks(request):
            return {p.partition_key.keys_by_dimension["task"] for p in request.asset_graph_subset.iterate_asset_partitions()
                    if p.asset_key == AssetKey("finetuned_models")}

        def matched_catalog_built():  # as the backfill's matched_catalog run records what it used
            instance.report_runless_asset_event(AssetMaterialization("matched_catalog", metadata={
                "label_files": MetadataValue.json(label_files_state(labels, settings.tasks))}))

        assert evaluate(None).skip_message and not evaluate(None).run_requests  # nothing there yet
        pd.DataFrame({"object_id": ["des_000001", "des_000002"], "featured": [1, 0]}).to_csv(labels / "a.csv", index=False)
        _settled(labels / "a.csv")
        result = evaluate(None)
        (request,) = result.run_requests
        expected = {AssetKeyPartitionKey(AssetKey("finetuned_models"), MultiPartitionKey({"task": "featured", "budget": b}))
                    for b in ("0", "25", "full")}  # the tiny profile's budgets
        expected |= {AssetKeyPartitionKey(AssetKey(k)) for k in ("matched_catalog", "evaluation_table",
                                                                 "champion_evaluation")}
        assert set(request.asset_graph_subset.iterate_asset_partitions()) == expected  # featured only
        assert not evaluate(result.cursor).run_requests  # requested already: no second backfill

        matched_catalog_built()
        assert not evaluate(None).run_requests  # matched_catalog uses a.csv: nothing to do, cursor or not
        pd.DataFrame({"object_id": ["des_000003"], "bar": [1]}).to_csv(labels / "b.csv", index=False)
        _settled(labels / "b.csv")
        assert requested_tasks(evaluate(result.cursor).run_requests[0]) == {"bar"}

        matched_catalog_built()
        (labels / "a.csv").unlink()  # withdrawn labels must be refitted without them
        assert requested_tasks(evaluate(None).run_requests[0]) == {"featured"}

        (labels / "d.parquet").write_bytes(b"not parquet")  # unreadable: skipped, tried again next tick
        _settled(labels / "d.parquet")
        skipped = evaluate(None)
        assert not skipped.run_requests and "cannot read a label file" in skipped.skip_message


def test_the_sensor_waits_for_a_label_file_to_settle_and_ignores_one_being_written(tmp_path):
    labels = tmp_path / "data" / "tiny" / "labels"
    labels.mkdir(parents=True)
    resources = build_resources("tiny", data_dir=str(tmp_path / "data"))
    defs = Definitions(assets=all_assets("tiny"), sensors=[new_target_labels], resources=resources)
    with DagsterInstance.ephemeral() as instance:
        def evaluate():
            return new_target_labels.evaluate_tick(build_sensor_context(
                instance=instance, definitions=defs, resources={"settings": resources["settings"]}))

        half_written = labels / ".labels.csv.part"  # a writer's file before its atomic rename
        half_written.write_text("object_id,featured\ndes_000001,1\ndes_0000")
        _settled(half_written)
        skipped = evaluate()
        assert not skipped.run_requests and "already uses every label file" in skipped.skip_message

        pd.DataFrame({"object_id": ["des_000001"], "featured": [1]}).to_csv(labels / "fresh.csv", index=False)
        skipped = evaluate()  # just written: perhaps a copy still in progress
        assert not skipped.run_requests and "fresh.csv" in skipped.skip_message and "settle" in skipped.skip_message
        _settled(labels / "fresh.csv")
        (request,) = evaluate().run_requests
        assert request.tags["galpipe/label_files"] == "fresh.csv"  # the .part file is not among them


def test_reevaluation_logs_runs_and_fails_on_a_planted_regression(tiny_project):
    root, _ = tiny_project
    result, check = _reevaluate(root)
    assert result.success and check.passed, check.description
    table = pd.read_parquet(root / "data" / "tiny" / "champion_evaluation.parquet")
    assert set(table.task) == {"featured", "edge_on", "bar"}
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    run = client.get_run(table.set_index("task").mlflow_run_id["featured"])
    assert run.info.status == "FINISHED" and run.data.tags["evaluated_model"].startswith("models:/galpipe-tiny-featured-des/")
    assert "test_accuracy" in run.data.metrics
    task = table.set_index("task").accuracy.idxmax()  # tiny models: some are near chance
    accuracy = table.set_index("task").accuracy[task]
    assert accuracy > 0.55  # so that turning the model round must lose more than the tolerance

    name = f"galpipe-tiny-{task}-des"
    champion = client.get_model_version_by_alias(name, "champion")
    tracker = Tracker(f"sqlite:///{root}/mlruns/mlflow.db", str(root / "mlruns" / "artifacts"), "galpipe-tiny")
    model = load_registered_model(tracker.tracking_uri, f"models:/{name}/{champion.version}")
    with tracker.run("planted-regression", {}, {}) as run_id:
        example = torch.zeros(2, 3, 69, 69).numpy()
        bad_version = tracker.log_and_register_model(run_id, negated(model), example, name,
                                                        {**champion.tags, "role": "planted_regression"}).version
    tracker.set_alias(name, "champion", bad_version)
    try:
        result, check = _reevaluate(root)
    finally:
        tracker.set_alias(name, "champion", champion.version)
    assert not check.passed
    assert f"{task} (version {bad_version}): accuracy" in check.description
    assert all(f"{other}:" not in check.description for other in {"featured", "edge_on", "bar"} - {task})
    # The accepted value is still the good model's, so the regression keeps failing until fixed.
    assert float(client.get_registered_model(name).tags["accepted_accuracy"]) == pytest.approx(accuracy, abs=1e-5)


def test_reevaluating_on_a_test_split_of_one_class_names_the_task(tiny_project, tmp_path):
    root, exit_code = tiny_project
    assert exit_code == 0
    run_dir = root / "data" / "tiny"
    matched = pd.read_parquet(run_dir / "matched_catalog.parquet")
    index = pd.read_parquet(run_dir / "target" / "model_inputs.parquet")
    x = np.load(run_dir / "target" / "model_inputs_69px.npy", mmap_mode="r")
    smooth_only = matched[(matched.split == "test") & (matched.featured == 0)]
    tracker = Tracker(f"sqlite:///{root}/mlruns/mlflow.db", str(root / "mlruns" / "artifacts"), "galpipe-tiny")
    with pytest.raises(ValueError, match=r"re-evaluating the featured champion on the target's test split: "
                                         r"all \d+ galaxies have label \[0\]"):
        reevaluate_champions(tracker, {"featured": "galpipe-tiny-featured-des"}, x, smooth_only, index, tmp_path, {})


def test_batch_prediction_covers_every_good_target_cutout_once(tiny_project):
    root, exit_code = tiny_project
    assert exit_code == 0
    run_dir = root / "data" / "tiny"
    chunks = sorted((run_dir / "target" / "morphology").glob("chunk-*.parquet"))
    assert len(chunks) == 8
    predicted = pd.concat([pd.read_parquet(p) for p in chunks])
    manifest = pd.read_parquet(run_dir / "target" / "raw_cutouts.parquet")
    assert sorted(predicted.object_id) == sorted(manifest.object_id[manifest.status == "ok"])
    assert {"p_featured", "edge_on", "p_bar"} <= set(predicted.columns)
    # From the raw cutouts, the champion's own probabilities on the model inputs the experiment made.
    index = pd.read_parquet(run_dir / "target" / "model_inputs.parquet")
    rows = index[index.status == "ok"].set_index("object_id").row
    x = np.load(run_dir / "target" / "model_inputs_69px.npy", mmap_mode="r")
    champion = load_registered_model(f"sqlite:///{root}/mlruns/mlflow.db", "models:/galpipe-tiny-featured-des@champion")
    both = predicted[predicted.object_id.isin(rows.index)]
    assert len(both) > 0.9 * len(predicted)
    np.testing.assert_allclose(both.p_featured, predict_proba(champion, x[rows[both.object_id].to_numpy()]), atol=1e-5)
