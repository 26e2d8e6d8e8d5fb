"""Model assets in lineage order: model inputs (per survey) -> pretrained_model (per task) ->
finetuned_models (per task x label budget) -> evaluation_table. Each reads its inputs, calls the
protocol in galpipe.experiment and records metadata; models live in MLflow, the assets pass
model URIs and metrics. `model_assets` makes them for a project's tasks and label budgets, which
are the partitions."""

import time

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    MetadataValue,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    StaticPartitionsDefinition,
    asset,
)

from galpipe.defs.metadata import as_table, image_md, run_tags
from galpipe.defs.resources import GalpipeSettings
from galpipe.evaluation import adaptation_goals, paired_comparisons, plot_learning_curves, summarise, with_intervals
from galpipe.experiment.protocol import CHAMPION_RULE, Recorder, TransferData, crown_champions, finetune, pretrain
from galpipe.files import atomic_write
from galpipe.links import mlflow_model_version_url, mlflow_results_view_url, mlflow_run_url
from galpipe.preprocessing import ModelInputs

MODELS_GROUP = "models"
TRANSFER_INS = {"source_catalog": AssetIn(key=AssetKey("source_catalog")),
                "source_inputs": AssetIn(key=AssetKey("source_model_inputs")),
                "matched_catalog": AssetIn(), "target_inputs": AssetIn(key=AssetKey("target_model_inputs"))}


def model_inputs_asset(role: str):
    @asset(key=AssetKey(f"{role}_model_inputs"), group_name=MODELS_GROUP,
           ins={"catalog": AssetIn(key=AssetKey(f"{role}_catalog")), "raw_cutouts": AssetIn(key=AssetKey(f"{role}_raw_cutouts"))},
           required_resource_keys={"settings", f"{role}_survey"},
           description=f"Every good {role} cutout as a 69x69 model input over the survey's framing, normalised "
                       "per image, stacked in one memory-mapped .npy; the value is the array's path and its index.")
    def model_inputs(context: AssetExecutionContext, catalog: pd.DataFrame, raw_cutouts: pd.DataFrame) -> ModelInputs:
        settings: GalpipeSettings = context.resources.settings
        started = time.perf_counter()
        array_path = settings.run_dir / role / "model_inputs_69px.npy"
        survey = getattr(context.resources, f"{role}_survey")
        framing = survey.get_framing()
        index = survey.build_model_inputs(catalog, raw_cutouts, array_path, settings.get_profile(), f"{role} catalogue")
        for row in index[index.status != "ok"].itertuples():
            context.log.warning(f"{role} {row.object_id}: no model input: {row.reason}")
        context.add_output_metadata({"n_ok": int((index.status == "ok").sum()),
                                     "n_failed": int((index.status != "ok").sum()), "framing": framing.describe(),
                                     "seconds": round(time.perf_counter() - started, 1)})
        return ModelInputs(str(array_path), index, framing.model_field_arcsec)

    return model_inputs


def _recorder(context: AssetExecutionContext) -> Recorder:
    settings: GalpipeSettings = context.resources.settings
    return Recorder(context.resources.mlflow.tracker(settings), run_tags(context), settings.run_dir,
                    context.log.info)


def _transfer_data(profile, source_catalog, source_inputs, matched_catalog, target_inputs) -> TransferData:
    return TransferData(source_catalog, source_inputs, matched_catalog, target_inputs, profile.pretrain_on_test_counterparts)


PRETRAINED = dict(group_name=MODELS_GROUP, ins=TRANSFER_INS,
                  required_resource_keys={"settings", "mlflow", "source_survey", "target_survey"},
                  description="The classifier trained on the source survey, registered in MLflow; also applied "
                              "directly to the target test set. With the contrastive strategies, also their "
                              "networks pretrained without labels on the target images (SimCLR), registered as "
                              "<experiment>-<task>-<target>-self-supervised.")


def pretrained_model(context: AssetExecutionContext, source_catalog: pd.DataFrame, source_inputs: ModelInputs,
                     matched_catalog: pd.DataFrame, target_inputs: ModelInputs) -> dict:
    profile = context.resources.settings.get_profile()
    data = _transfer_data(profile, source_catalog, source_inputs, matched_catalog, target_inputs)
    recorder = _recorder(context)
    source = context.resources.source_survey
    result = pretrain(profile, context.partition_key, data, source.name, recorder, source.realism_params(profile),
                      context.resources.target_survey.name)
    name, version = result["model_uri"].removeprefix("models:/").rsplit("/", 1)
    context.add_output_metadata({
        "model_uri": result["model_uri"], "mlflow_run_id": result["run_id"], "epochs": result["epochs"],
        "mlflow_run": MetadataValue.url(mlflow_run_url(recorder.tracker.experiment_id, result["run_id"])),
        "model_version": MetadataValue.url(mlflow_model_version_url(name, version)),
        "source_val_accuracy": result["source_val"]["accuracy"],
        "target_test_accuracy_direct": result["target_test_direct"]["accuracy"],
        "target_test_accuracy_direct_by_seed": MetadataValue.json(
            {seed: run["target_test_direct"]["accuracy"] for seed, run in result["seeds"].items()})})
    return result


FINETUNED = dict(group_name=MODELS_GROUP, required_resource_keys={"settings", "mlflow", "target_survey"},
                 ins={**TRANSFER_INS,
                      "pretrained_model": AssetIn(partition_mapping=MultiToSingleDimensionPartitionMapping("task"))},
                 description="For one task and label budget: the project's strategies (full, head_only, scratch; "
                             "and adabn, coral, self_training, contrastive, fixmatch, ..., which also use "
                             "unlabelled target images) over its seeds and label selections (the same N galaxies "
                             "for every strategy of a seed and selection), each run logged and registered in "
                             "MLflow. Budget 0: the source model applied directly, and the strategies that need "
                             "no target label.")


def finetuned_models(context: AssetExecutionContext, pretrained_model: dict, source_catalog: pd.DataFrame,
                     source_inputs: ModelInputs, matched_catalog: pd.DataFrame,
                     target_inputs: ModelInputs) -> pd.DataFrame:
    key = context.partition_key.keys_by_dimension
    profile = context.resources.settings.get_profile()
    data = _transfer_data(profile, source_catalog, source_inputs, matched_catalog, target_inputs)
    recorder = _recorder(context)
    results = finetune(profile, key["task"], key["budget"], data, pretrained_model,
                       context.resources.target_survey.name, recorder)
    shown = results[["strategy", "selection", "seed", "accuracy", "roc_auc", "completeness_1", "purity_1"]].assign(
        mlflow_run=[mlflow_run_url(recorder.tracker.experiment_id, run_id) for run_id in results.run_id])
    context.add_output_metadata({"results": as_table(shown),
                                 "mlflow_runs": MetadataValue.url(mlflow_results_view_url(recorder.tracker.experiment_id))})
    return results


@asset(group_name=MODELS_GROUP, ins={"finetuned_models": AssetIn(), "matched_catalog": AssetIn()},
       required_resource_keys={"settings", "mlflow", "target_survey"},
       description="Accuracy, completeness and purity of each class, ROC AUC: mean and spread over seeds "
                   "per task x budget x strategy, 95% bootstrap intervals over the test galaxies, PR AUC, "
                   "accuracy against the simulation's truth where there is one, and paired tests between "
                   "strategies (`comparisons`), with learning curves; sets each task's champion alias. "
                   f"The champion: {CHAMPION_RULE}")
def evaluation_table(context: AssetExecutionContext, finetuned_models: pd.DataFrame,
                     matched_catalog: pd.DataFrame) -> pd.DataFrame:
    run_dir = context.resources.settings.run_dir
    if finetuned_models is None or len(finetuned_models) == 0:
        raise ValueError("no finetuned_models partition is materialized yet: nothing to evaluate")
    summary = with_intervals(summarise(finetuned_models), finetuned_models, _truth(matched_catalog))
    comparisons = paired_comparisons(finetuned_models)
    png = plot_learning_curves(summary, run_dir / "learning_curves.png")
    for name, table in (("evaluation_table.csv", summary), ("comparisons.csv", comparisons)):
        atomic_write(run_dir / name, lambda tmp, table=table: table.to_csv(tmp, index=False))
    tracker = context.resources.mlflow.tracker(context.resources.settings)
    with tracker.run("evaluation-table", {**run_tags(context), "galpipe.kind": "evaluation"}, {}) as run_id:
        for path in (png, run_dir / "evaluation_table.csv", run_dir / "comparisons.csv"):
            tracker.log_artifact(run_id, path)  # the table and its learning curves, beside the runs they summarise
    champions = crown_champions(tracker, finetuned_models, context.resources.target_survey.name, run_tags(context))
    goals = adaptation_goals(summary, comparisons=comparisons, results=finetuned_models)
    if len(goals):  # the adaptation strategies' goals, where they ran
        atomic_write(run_dir / "adaptation_goals.csv", lambda tmp: goals.to_csv(tmp, index=False))
    else:
        (run_dir / "adaptation_goals.csv").unlink(missing_ok=True)
    context.add_output_metadata({**_evaluation_metadata(summary, champions, goals, png, tracker.experiment_id),
                                 **({"comparisons": as_table(comparisons)} if len(comparisons) else {})})
    return summary


def _truth(matched_catalog: pd.DataFrame) -> dict:
    """task -> object_id -> the simulation's truth (0/1), where the target survey is simulated."""
    return {c.removeprefix("truth_"): matched_catalog.set_index("object_id")[c].astype(float)
            for c in matched_catalog.columns if c.startswith("truth_")}


def _evaluation_metadata(summary: pd.DataFrame, champions: pd.DataFrame, goals: pd.DataFrame, png, experiment_id: str):
    """The evaluation table and champions as tables, each champion's MLflow model version as a
    link, the rule that chose them, the learning curves, and the MLflow runs view of the experiment."""
    shown = summary[[c for c in ("task", "label_budget", "strategy", "selection", "n_seeds", "accuracy_mean",
                                 "accuracy_std", "accuracy_low", "accuracy_high", "seed_ensemble_accuracy",
                                 "completeness_1_mean", "purity_1_mean", "roc_auc_mean", "roc_auc_low", "roc_auc_high",
                                 "pr_auc_mean", "accuracy_truth_mean") if c in summary]]
    links = {f"champion_{row.task}": MetadataValue.url(mlflow_model_version_url(row.registered_model, row.version))
             for row in champions.itertuples()}
    return {"table": as_table(shown), "n_rows": len(shown), "champions": as_table(champions.drop(columns="run_id")),
            "champion_rule": MetadataValue.text(CHAMPION_RULE), **links, "learning_curves": image_md(png),
            "mlflow_runs": MetadataValue.url(mlflow_results_view_url(experiment_id)),
            **({"adaptation_goals": as_table(goals)} if len(goals) else {})}


def model_assets(tasks, label_budgets) -> list:
    """The model assets, partitioned by `tasks` and `label_budgets` (a project's)."""
    by_task = StaticPartitionsDefinition(list(tasks))
    by_task_and_budget = MultiPartitionsDefinition({"task": by_task, "budget": StaticPartitionsDefinition(list(label_budgets))})
    return [model_inputs_asset("source"), model_inputs_asset("target"),
            asset(partitions_def=by_task, **PRETRAINED)(pretrained_model),
            asset(partitions_def=by_task_and_budget, **FINETUNED)(finetuned_models), evaluation_table]
