"""The transfer-learning assets for real: `galpipe run` on the tiny profile with a real Dagster
instance and MLflow's SQLite store, then the failure cases."""

import json
import multiprocessing

import pandas as pd
import pytest
import torch
from dagster import AssetKey, MultiPartitionKey, materialize
from mlflow import MlflowClient

from galpipe.definitions import all_assets, build_resources
from galpipe.defs.checks import CHECKS
from galpipe.defs.resources import MlflowTracking
from galpipe.tracking import ModelRegistryError, Tracker, load_registered_model
from galpipe.training import TrainingError
from galpipe_tests.conftest import galpipe_in, write_project


def _client(root):
    return MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")


def _whole_run_ids(root) -> set[str]:
    """The Dagster runs of the tiny project's whole `galpipe run` (a later partial re-run adds others)."""
    timings = json.loads((root / "data" / "tiny" / "run_timings.json").read_text())
    return {step["dagster_run_id"] for step in timings["steps"]}


def test_run_produces_the_evaluation_table(tiny_project):
    root, exit_code = tiny_project
    assert exit_code == 0
    table = pd.read_parquet(root / "data" / "tiny" / "evaluation_table.parquet")
    assert set(table.task) == {"featured", "edge_on", "bar"}
    assert set(table.strategy) == {"direct", "full", "head_only", "scratch", "adabn", "coral", "self_training"}
    assert set(zip(table.strategy, table.selection)) >= {("direct", "none"), ("coral", "none"), ("full", "random"),
                                                         ("full", "diversity"), ("self_training", "random")}
    assert set(table[table.label_budget == 0].strategy) == {"direct", "adabn", "coral", "self_training"}
    largest = table[table.label_budget == table.label_budget.max()]  # not an adaptation budget
    assert set(largest.strategy) == {"full", "head_only", "scratch"} and set(largest.selection) == {"random"}
    assert table.accuracy_mean.between(0, 1).all() and (root / "data" / "tiny" / "learning_curves.png").is_file()


def test_each_stage_runs_as_its_named_job(tiny_project):
    """The Runs page says what each run was: one named job per stage, never an anonymous one."""
    from collections import Counter

    from dagster import DagsterInstance

    root, _ = tiny_project
    with DagsterInstance.from_config(str(root / ".dagster_home")) as instance:
        jobs = Counter(run.job_name for run in instance.get_runs() if run.run_id in _whole_run_ids(root))
    assert jobs == {"data_job": 1, "pretraining_job": 3, "finetuning_job": 9, "evaluation_job": 1,
                    "reevaluation_job": 1, "prediction_job": 8}


def test_every_run_is_in_mlflow_with_registry_entries_and_champions(tiny_project):
    root, _ = tiny_project
    client = _client(root)
    experiment = client.get_experiment_by_name("galpipe-tiny")
    whole_run = _whole_run_ids(root)
    runs = [r for r in client.search_runs([experiment.experiment_id], max_results=1000)
            if r.data.tags.get("dagster.asset") in ("pretrained_model", "finetuned_models")  # training runs
            and r.data.tags["dagster.run_id"] in whole_run]
    # 3 pretrained + 3 tasks x (3 adaptation strategies at budget 0 + at budget 25 the 6 strategies
    # with random selection and full with diversity selection + at budget full the paper's 3), 1 seed
    assert len(runs) == 3 + 3 * (3 + 7 + 3) and {r.info.status for r in runs} == {"FINISHED"}
    pretrained = {r.data.params["task"]: r.info.run_id for r in runs if r.data.params.get("role") == "pretrained"}
    assert set(pretrained) == {"featured", "edge_on", "bar"}
    # How real the simulated source was made is on each model's run, to compare projects by.
    params = next(r.data.params for r in runs if r.data.params.get("role") == "pretrained")
    assert params["source_sky_continuous_arms"] == "False" and params["source_sky_merger_fraction"] == "0.0"
    assert params["source_seeing_spread"] == "0.0" and params["source_sky_seed"] == "0"  # tiny.yaml's sky
    for run in runs:
        assert run.data.tags["dagster.run_id"] and run.data.tags["dagster.asset"] in ("pretrained_model", "finetuned_models")
        assert "target_test_accuracy" in run.data.metrics
        # Its test metrics are linked to its logged model too (the MLflow UI's model page shows them).
        [output] = run.outputs.model_outputs
        logged = client.get_logged_model(output.model_id)
        linked = {m.key: m.value for m in logged.metrics}
        assert linked["target_test_accuracy"] == run.data.metrics["target_test_accuracy"]
        assert logged.experiment_id == experiment.experiment_id  # in its run's experiment, not MLflow's Default
        if run.data.params.get("strategy") != "adabn" or run.data.params["label_budget"] != "0":
            assert "val_loss" in run.data.metrics  # AdaBN without labels trains nothing
        if "strategy" in run.data.params:  # fine-tuning runs link to the run they started from
            assert run.data.tags["pretrained_run_id"] == pretrained[run.data.params["task"]]
            assert run.data.tags["dagster.partition"].endswith(run.data.params["task"])
            assert run.data.params["selection"] in ("random", "diversity", "none")
        if run.data.params.get("strategy") in ("adabn", "coral", "self_training"):  # their extra parameters
            assert int(run.data.params["n_unlabelled_target"]) > 0
        if run.data.params.get("strategy") == "self_training":
            assert int(run.data.params["n_pseudo_labels"]) > 0 and "teacher" in run.data.params
        if run.data.params.get("strategy") == "coral":
            assert float(run.data.params["alignment_weight"]) > 0
    names = {m.name: m for m in client.search_registered_models()}
    for task in ("featured", "edge_on", "bar"):
        assert len(client.search_model_versions(f"name='galpipe-tiny-{task}-sdss'")) == 1
        trained = [v for v in client.search_model_versions(f"name='galpipe-tiny-{task}-des'")
                   if v.tags.get("role") in ("full", "head_only", "scratch") and v.run_id in {r.info.run_id for r in runs}]
        assert len(trained) == 4 + 3  # budget 25: 3 strategies at random, full at diversity; budget full: 3
        assert "champion" in names[f"galpipe-tiny-{task}-des"].aliases
    champion = load_registered_model(f"sqlite:///{root}/mlruns/mlflow.db", "models:/galpipe-tiny-bar-des@champion")
    assert champion(torch.zeros(1, 3, 69, 69)).shape == (1,)


def _resources(root, project="tiny", **kwargs):
    mlflow = MlflowTracking(tracking_uri=f"sqlite:///{root}/mlruns/mlflow.db", artifact_root=str(root / "mlruns" / "artifacts"))
    return build_resources(project, data_dir=str(root / "data"), mlflow=mlflow, **kwargs)


def test_budget_beyond_the_pool_fails_clearly(tiny_project, tmp_path):
    root, _ = tiny_project
    project = write_project(tmp_path, "tiny", label_budgets=[0, 25, 1000, "full"])  # tiny's data, one more budget
    result = materialize([*all_assets(project), *CHECKS], selection=[AssetKey("finetuned_models")],
                         partition_key=MultiPartitionKey({"task": "bar", "budget": "1000"}),
                         resources=_resources(root, project), raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    assert "label budget 1000 exceeds the labelled pool of" in (error.cause.message if error.cause else error.message)


def test_rerun_from_finetuning_reuses_upstream_and_keeps_the_other_budgets(tiny_project):
    root, _ = tiny_project
    table_path = root / "data" / "tiny" / "evaluation_table.parquet"
    before = pd.read_parquet(table_path)
    assert galpipe_in(root, ["run", "--profile", "tiny", "--from", "finetuned_models", "--budgets", "25"]) == 0
    steps = [s["step"] for s in json.loads((root / "data" / "tiny" / "run_timings_partial.json").read_text())["steps"]]
    assert steps[:4] == ["finetuned_models[featured|25]", "finetuned_models[edge_on|25]", "finetuned_models[bar|25]",
                         "evaluation_table"]
    assert not [s for s in steps if s.startswith(("data", "pretrained_model"))]
    after = pd.read_parquet(table_path)
    kept = [t[t.label_budget != 25].reset_index(drop=True) for t in (before, after)]
    pd.testing.assert_frame_equal(*kept)  # budgets not re-run are read back unchanged
    assert set(after[after.label_budget == 25].strategy) == set(before[before.label_budget == 25].strategy)
    client = _client(root)
    runs = client.search_runs([client.get_experiment_by_name("galpipe-tiny").experiment_id], max_results=1000)
    pretrained = {r.info.run_id for r in runs if r.data.params.get("role") == "pretrained"}
    rerun = [r for r in runs if r.data.tags.get("dagster.asset") == "finetuned_models"
             and r.data.tags["dagster.run_id"] not in _whole_run_ids(root)]
    assert {r.data.params["label_budget"] for r in rerun} == {"25"} and len(pretrained) == 3
    assert {r.data.tags["pretrained_run_id"] for r in rerun} <= pretrained  # the models trained before


def test_rerun_from_a_stage_never_materialized_names_what_is_missing(tmp_path, capsys):
    assert galpipe_in(tmp_path, ["run", "--profile", "tiny", "--from", "pretrained_model"]) == 2
    error = capsys.readouterr().err
    assert "--from pretrained_model" in error and "matched_catalog" in error and "target_model_inputs" in error


def test_missing_registered_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelRegistryError, match="models:/galpipe-nope-des/7"):
        load_registered_model(f"sqlite:///{tmp_path}/mlflow.db", "models:/galpipe-nope-des/7")


def test_a_failing_run_is_marked_failed_not_left_running(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "artifacts"), "failures")
    with pytest.raises(TrainingError):
        with tracker.run("diverges", {}, {"learning_rate": 10}) as run_id:
            raise TrainingError("loss became nan at epoch 3")
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FAILED" and "loss became nan" in run.data.tags["error"]


def _log_runs(db, artifacts, worker):
    tracker = Tracker(f"sqlite:///{db}", artifacts, "parallel")
    for k in range(8):
        with tracker.run(f"w{worker}-{k}", {"worker": worker}, {"k": k}) as run_id:
            tracker.log_metrics(run_id, {"accuracy": k / 10}, step=k)


def test_parallel_writers_do_not_corrupt_the_store(tmp_path):
    db, artifacts = tmp_path / "mlflow.db", str(tmp_path / "artifacts")
    Tracker(f"sqlite:///{db}", artifacts, "parallel")  # create the database once, up front
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_log_runs, args=(db, artifacts, w)) for w in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("parallel").experiment_id])
    assert len(runs) == 16 and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.metrics["accuracy"] for r in runs) == sorted([k / 10 for k in range(8)] * 2)


def test_two_experiments_in_one_project_keep_their_own_champions(tmp_path):
    """Registered models are per experiment (galpipe-<profile> unless the settings name another):
    crowning one experiment's champion never moves the other's (a quote in a name included). With
    two seeds the champion is their seed ensemble: registered once (crowning again finds it),
    tagged with its members' versions, scored by the seeds' mean probability, and it predicts
    that mean."""
    import numpy as np
    import pandas as pd

    from galpipe.experiment.protocol import crown_champions
    from galpipe.models import build_model
    from galpipe.prediction import model_uris
    from galpipe.tracking import model_version, registered_model_name

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(6, 3, 69, 69)).astype(np.float32))
    labels = [0, 1, 0, 1, 1, 0]
    champions, members, crowned_accuracy = {}, {}, {}
    for experiment in ("galpipe-small", "galpipe-o'tiny"):
        tracker = Tracker(uri, str(tmp_path / "artifacts"), experiment)
        rows = []
        for seed in (0, 1):
            model = build_model("compact", seed=seed + (2 if experiment == "galpipe-o'tiny" else 0)).eval()
            with tracker.run(f"full-{seed}", {}, {}) as run_id:
                model_uri = tracker.log_and_register_model(run_id, model, np.zeros((1, 3, 69, 69), np.float32),
                                                              registered_model_name(experiment, "bar", "des"),
                                                              {"task": "bar", "seed": seed, "architecture": "compact",
                                                               "last_reevaluation_run_id": "a past one"}).uri
            with torch.no_grad():
                probability = torch.sigmoid(model(x)).numpy()
            rows.append({"task": "bar", "strategy": "full", "selection": "random", "label_budget": 25, "seed": seed,
                         "model_uri": model_uri, "run_id": run_id, "accuracy": 0.8,
                         "val_loss": 0.1 + seed, "test_object_ids": [str(i) for i in range(6)],
                         "test_labels": labels, "test_probabilities": probability.tolist()})
        crowned = crown_champions(tracker, pd.DataFrame(rows), "des")
        again = crown_champions(tracker, pd.DataFrame(rows), "des")
        assert again.version.tolist() == crowned.version.tolist()  # the same ensemble, not a new version
        [version] = crowned.version.tolist()
        assert version not in [r["model_uri"].rsplit("/", 1)[-1] for r in rows]
        assert crowned.seeds.tolist() == ["0,1"]
        mean_probability = np.mean([r["test_probabilities"] for r in rows], axis=0)
        assert crowned.test_accuracy.iloc[0] == pytest.approx(np.mean((mean_probability >= 0.5) == labels))
        assert crowned.seed_test_accuracy_mean.iloc[0] == pytest.approx(
            np.mean([np.mean((np.array(r["test_probabilities"]) >= 0.5) == labels) for r in rows]))
        champions[experiment] = f"models:/{registered_model_name(experiment, 'bar', 'des')}/{version}"
        crowned_accuracy[experiment] = crowned.test_accuracy.iloc[0]
        members[experiment] = ",".join(r["model_uri"].rsplit("/", 1)[-1] for r in rows)
        served = load_registered_model(uri, champions[experiment])
        with torch.no_grad():
            np.testing.assert_allclose(torch.sigmoid(served(x)).numpy(), mean_probability, atol=1e-6)
    for experiment, expected in champions.items():
        [alias_uri] = model_uris("champion", ["bar"], "des", experiment)
        version = model_version(uri, alias_uri)
        assert f"models:/{version.name}/{version.version}" == expected
        assert version.tags["ensemble_of"] == members[experiment] and version.tags["task"] == "bar"
        assert version.tags["seeds"] == "0,1" and version.tags["kind"] == "seed_ensemble"
        assert version.tags["architecture"] == "compact"
        assert "seed" not in version.tags and "last_reevaluation_run_id" not in version.tags  # the members' own
        run = MlflowClient(uri).get_run(version.run_id)
        assert run.data.tags["galpipe.stage"] == "seed_ensemble"  # not among the fine-tuning runs
        assert run.data.metrics["target_test_accuracy"] == pytest.approx(crowned_accuracy[experiment])
    assert champions["galpipe-small"] != champions["galpipe-o'tiny"]
