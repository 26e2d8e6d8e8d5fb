"""Model assets in lineage order: model inputs (per survey) -> pretrained_model (per task) ->
finetuned_models (per task x label budget) -> evaluation_table. Models live in MLflow; the
assets pass model URIs and metrics."""

import copy
import time

import numpy as np
import pandas as pd
from dagster import (AssetExecutionContext, AssetIn, AssetKey, MetadataValue,
                     MultiPartitionsDefinition, MultiToSingleDimensionPartitionMapping,
                     StaticPartitionsDefinition, asset)

from galpipe.adaptation import (AdaptationData, embeddings, has_batch_norm, select_for_labelling, strategy_config,
                                train_adapted)
from galpipe.cutouts import atomic_write_bytes
from galpipe.defs.metadata import image_md, run_tags
from galpipe.defs.resources import GalpipeSettings
from galpipe.evaluation import (adaptation_goals, binary_metrics, plot_confusion, plot_learning_curves, summarise,
                                with_selection)
from galpipe.models import build_model, count_flops
from galpipe.preprocessing import build_model_inputs, load_model_inputs
from galpipe.profiles import ALL_LABEL_BUDGETS
from galpipe.simulation.population import TASKS
from galpipe.tracking import load_registered_model
from galpipe.training import TrainConfig, predict_proba, train_classifier
from galpipe.transfer import (DIRECT, STRATEGIES, labelled_sample, parse_budget, require_two_classes,
                              split_by_hash, split_train_validation)

MODELS_GROUP = "models"
task_partitions = StaticPartitionsDefinition(list(TASKS))
task_budget_partitions = MultiPartitionsDefinition({"task": task_partitions,
                                                    "budget": StaticPartitionsDefinition(list(ALL_LABEL_BUDGETS))})
SOURCE_VALIDATION_FRACTION = 0.15


def inputs_path(settings: GalpipeSettings, role: str):
    return settings.run_dir / role / "model_inputs_69px.npy"


def model_inputs_asset(role: str):
    @asset(key=AssetKey([role, "model_inputs"]), group_name=MODELS_GROUP,
           ins={"raw_cutouts": AssetIn(key=AssetKey([role, "raw_cutouts"]))},
           description=f"Every good {role} cutout as a 69x69 g,r,i model input, normalised per image, "
                       "stacked in one memory-mapped .npy; the value is the index (object_id -> row).")
    def model_inputs(context: AssetExecutionContext, settings: GalpipeSettings,
                     raw_cutouts: pd.DataFrame) -> pd.DataFrame:
        started = time.perf_counter()
        profile = settings.get_profile()
        index = build_model_inputs(raw_cutouts, inputs_path(settings, role), profile.cutout_field_arcsec,
                                   profile.input_mode)
        for row in index[index.status != "ok"].itertuples():
            context.log.warning(f"{role} {row.object_id}: no model input: {row.reason}")
        context.add_output_metadata({"n_ok": int((index.status == "ok").sum()),
                                     "n_failed": int((index.status != "ok").sum()),
                                     "array": str(inputs_path(settings, role)),
                                     "seconds": round(time.perf_counter() - started, 1)})
        return index

    return model_inputs


def _train_config(settings: GalpipeSettings, task: str, **changes) -> TrainConfig:
    profile = settings.get_profile()
    weighting = "balanced" if task in profile.class_balanced_tasks else "none"
    return TrainConfig(batch_size=profile.batch_size, patience=profile.patience, class_weighting=weighting, **changes)


def _evaluate_and_log(tracker, run_id, model, x, sample, prefix: str, plots_dir, title) -> dict:
    probability = predict_proba(model, x[sample.row])
    metrics = binary_metrics(sample.label, probability)
    tracker.log_metrics(run_id, {f"{prefix}_{k}": v for k, v in metrics.items()})
    png = plot_confusion(sample.label, probability, plots_dir / f"{run_id}_{prefix}_confusion.png", title)
    tracker.log_artifact(run_id, png, "plots")
    return metrics


def _model_tags(profile, task: str, role: str, **more) -> dict:
    """On each registered model version: what `galpipe predict` needs to prepare its inputs."""
    return {"task": task, "role": role, "architecture": profile.architecture, "input_mode": profile.input_mode,
            "field_arcsec": profile.cutout_field_arcsec, **more}


def sorted_by_row(sample):
    """Rows in increasing order: memory-mapped reads stay sequential."""
    return sample.subset(np.argsort(sample.row))


@asset(partitions_def=task_partitions, group_name=MODELS_GROUP, io_manager_key="io_manager",
       ins={"source_catalog": AssetIn(key=AssetKey(["source", "catalog"])),
            "source_inputs": AssetIn(key=AssetKey(["source", "model_inputs"])),
            "matched_catalog": AssetIn(), "target_inputs": AssetIn(key=AssetKey(["target", "model_inputs"]))},
       required_resource_keys={"settings", "mlflow", "source_survey"},
       description="The classifier trained on the source survey, registered in MLflow; also applied "
                   "directly to the target test set.")
def pretrained_model(context: AssetExecutionContext, source_catalog: pd.DataFrame, source_inputs: pd.DataFrame,
                     matched_catalog: pd.DataFrame, target_inputs: pd.DataFrame) -> dict:
    settings: GalpipeSettings = context.resources.settings
    profile = settings.get_profile()
    task = context.partition_key
    tracker = context.resources.mlflow.tracker()
    survey = context.resources.source_survey.instrument
    sample = labelled_sample(source_catalog, source_inputs, task)
    require_two_classes(sample, f"source catalogue, task {task}")
    train, validation = split_by_hash(sample, SOURCE_VALIDATION_FRACTION, salt="source-validation")
    test = sorted_by_row(labelled_sample(matched_catalog[matched_catalog.split == "test"], target_inputs, task))
    x_source = load_model_inputs(inputs_path(settings, "source"))
    x_target = load_model_inputs(inputs_path(settings, "target"))
    config = _train_config(settings, task, max_epochs=profile.pretrain_max_epochs, seed=0)
    model = build_model(profile.architecture, seed=config.seed)
    plots = settings.run_dir / "plots"
    params = {"task": task, "survey": survey, "architecture": profile.architecture, "role": "pretrained",
              "n_train": len(train), "n_validation": len(validation), "flops_per_image": count_flops(model),
              **config.as_params()}
    with tracker.run(f"pretrain-{task}-{survey}", run_tags(context), params) as run_id:
        history = train_classifier(model, x_source, train.row, train.label, validation.row, validation.label,
                                   config, settings.run_dir / "checkpoints" / f"pretrain-{task}.pt",
                                   on_epoch=lambda r: context.log.info(f"{task} epoch {r['epoch']}: {r}"))
        tracker.log_history(run_id, history)
        source_metrics = _evaluate_and_log(tracker, run_id, model, x_source, sorted_by_row(validation), "source_val",
                                           plots, f"{task}: {survey} validation")
        direct_metrics = _evaluate_and_log(tracker, run_id, model, x_target, test, "target_test", plots,
                                           f"{task}: applied directly to target")
        model_uri, version = tracker.log_and_register_model(
            run_id, model, np.array(x_source[:1]), f"galpipe-{task}-{survey}",
            _model_tags(profile, task, "pretrained"))
    context.add_output_metadata({"model_uri": model_uri, "mlflow_run_id": run_id, "epochs": len(history),
                                 "source_val_accuracy": source_metrics["accuracy"],
                                 "target_test_accuracy_direct": direct_metrics["accuracy"]})
    return {"task": task, "model_uri": model_uri, "version": version, "run_id": run_id,
            "source_val": source_metrics, "target_test_direct": direct_metrics}


@asset(partitions_def=task_budget_partitions, group_name=MODELS_GROUP,
       ins={"pretrained_model": AssetIn(partition_mapping=MultiToSingleDimensionPartitionMapping("task")),
            "matched_catalog": AssetIn(), "target_inputs": AssetIn(key=AssetKey(["target", "model_inputs"])),
            "source_catalog": AssetIn(key=AssetKey(["source", "catalog"])),
            "source_inputs": AssetIn(key=AssetKey(["source", "model_inputs"]))},
       required_resource_keys={"settings", "mlflow", "target_survey"},
       description="For one task and label budget: the strategies full, head_only and scratch, and the "
                   "adaptation strategies that also use unlabelled target images (adabn, coral, "
                   "self_training), over the profile's seeds and label selections (random, uncertainty, "
                   "diversity; the same N galaxies for every strategy of a seed and selection), each run "
                   "logged and registered in MLflow. Budget 0: the source model applied directly, and "
                   "the adaptation strategies as unsupervised domain adaptation.")
def finetuned_models(context: AssetExecutionContext, pretrained_model: dict, matched_catalog: pd.DataFrame,
                     target_inputs: pd.DataFrame, source_catalog: pd.DataFrame,
                     source_inputs: pd.DataFrame) -> pd.DataFrame:
    settings: GalpipeSettings = context.resources.settings
    profile = settings.get_profile()
    key = context.partition_key
    task, budget_key = key.keys_by_dimension["task"], key.keys_by_dimension["budget"]
    tracker = context.resources.mlflow.tracker()
    survey = context.resources.target_survey.instrument
    pool = labelled_sample(matched_catalog[matched_catalog.split == "pool"], target_inputs, task)
    test = sorted_by_row(labelled_sample(matched_catalog[matched_catalog.split == "test"], target_inputs, task))
    require_two_classes(test, f"target test set, task {task}")
    budget = parse_budget(budget_key, len(pool))
    base = {"task": task, "label_budget": budget, "budget_key": budget_key,
            "pretrained_model_uri": pretrained_model["model_uri"]}
    x = load_model_inputs(inputs_path(settings, "target"))
    pretrained = load_registered_model(tracker.tracking_uri, pretrained_model["model_uri"])  # loaded once
    rows = []
    if budget == 0:  # evaluated here, not copied: the test set may have grown since pretraining
        metrics = binary_metrics(test.label, predict_proba(pretrained, x[test.row]))
        rows.append({**base, "strategy": DIRECT, "selection": "none", "seed": 0, **metrics,
                     "model_uri": pretrained_model["model_uri"], "run_id": pretrained_model["run_id"],
                     "val_loss": np.nan})
    adapting = budget_key in profile.adaptation_budgets
    selections = profile.selections if adapting else ("random",)
    adaptation, adaptation_strategies = None, list(profile.adaptation_strategies) if adapting else []
    if "adabn" in adaptation_strategies and not has_batch_norm(pretrained):
        context.log.warning(f"{profile.architecture} has no batch normalisation: adabn skipped")
        adaptation_strategies.remove("adabn")
    if adaptation_strategies:
        source = labelled_sample(source_catalog, source_inputs, task)
        source_train, source_validation = split_by_hash(source, SOURCE_VALIDATION_FRACTION, salt="source-validation")
        not_test = ~target_inputs.object_id.isin(matched_catalog.object_id[matched_catalog.split == "test"])
        unlabelled = target_inputs[(target_inputs.status == "ok") & not_test].row.to_numpy()
        adaptation = AdaptationData.build(x, load_model_inputs(inputs_path(settings, "source")), source_train,
                                          source_validation, unlabelled)
    pool_probability = pool_embeddings = None
    if budget > 0 and set(selections) - {"random"}:  # the source model's view of the pool
        pool_probability = predict_proba(pretrained, x[pool.row])
        pool_embeddings = embeddings(pretrained, x, pool.row)

    def run(strategy, selection, seed, train, validation, teacher=None):
        config = strategy_config(strategy, _train_config(
            settings, task, seed=seed, max_epochs=profile.finetune_max_epochs, min_steps=profile.finetune_min_steps,
            training_mode="head_only" if strategy == "head_only" else "full",
            learning_rate=1e-3 if strategy in ("head_only", "scratch") else 3e-4))
        name = f"{strategy}-{task}-{budget_key}-{selection}-seed{seed}"
        checkpoint = settings.run_dir / "checkpoints" / f"{key}-{strategy}-{selection}-{seed}.pt"
        params = {"task": task, "survey": survey, "architecture": profile.architecture, "strategy": strategy,
                  "selection": selection, "label_budget": budget, "n_train": len(train) if train else 0,
                  "n_validation": len(validation) if validation else 0,
                  "pretrained_model_uri": pretrained_model["model_uri"], **config.as_params()}
        tags = {**run_tags(context), "pretrained_run_id": pretrained_model["run_id"]}
        with tracker.run(name, tags, params) as run_id:
            if strategy in STRATEGIES:
                model = build_model(profile.architecture, seed=seed) if strategy == "scratch" else copy.deepcopy(pretrained)
                history = train_classifier(model, x, train.row, train.label, validation.row, validation.label,
                                           config, checkpoint)
            else:
                model, history, extra = train_adapted(strategy, pretrained, train, validation, adaptation, config,
                                                      checkpoint, teacher)
                tracker.log_params(run_id, extra)
            tracker.log_history(run_id, history)
            metrics = _evaluate_and_log(tracker, run_id, model, x, test, "target_test", settings.run_dir / "plots",
                                        f"{task} {strategy} N={budget} ({selection})")
            model_uri, version = tracker.log_and_register_model(
                run_id, model, np.array(x[test.row[:1]]), f"galpipe-{task}-{survey}",
                _model_tags(profile, task, strategy, label_budget=budget, seed=seed, selection=selection))
        context.log.info(f"{task} N={budget} {strategy} ({selection}) seed {seed}: accuracy {metrics['accuracy']:.3f}")
        rows.append({**base, "strategy": strategy, "selection": selection, "seed": seed, **metrics,
                     "model_uri": model_uri, "run_id": run_id,
                     "val_loss": min((r["val_loss"] for r in history), default=np.nan)})
        return model

    for seed in profile.seeds:
        if budget == 0:  # unsupervised domain adaptation: no target label at all
            for strategy in adaptation_strategies:
                if strategy != "adabn" or seed == profile.seeds[0]:  # AdaBN draws nothing at random
                    run(strategy, "none", seed, None, None)
            continue
        for selection in selections:
            chosen = select_for_labelling(pool, budget, seed, selection, pool_probability, pool_embeddings)
            train, validation = split_train_validation(chosen, seed)
            strategies = [*STRATEGIES, *adaptation_strategies]
            if selection != "random":
                strategies = [s for s in strategies if s in profile.selection_strategies]
            teacher = None
            for strategy in strategies:
                model = run(strategy, selection, seed, train, validation, teacher)
                teacher = model if strategy == "full" else teacher  # self_training learns from it
    results = pd.DataFrame(rows)
    context.add_output_metadata({"results": MetadataValue.md(
        results[["strategy", "selection", "seed", "accuracy", "roc_auc", "completeness_1", "purity_1"]]
        .to_markdown(index=False))})
    return results


def choose_champion(runs: pd.DataFrame) -> pd.Series:
    """The run to serve, chosen without the test set (so the metrics reported on it stay
    unbiased): trained on the most target labels; of the strategies (x label selections), the
    lowest validation loss averaged over seeds (each seed has its own validation galaxies); of
    its seeds, the lowest."""
    runs = with_selection(runs)
    largest = runs[runs.label_budget == runs.label_budget.max()]
    strategy, selection = largest.groupby(["strategy", "selection"]).val_loss.mean().idxmin()
    return largest[(largest.strategy == strategy) & (largest.selection == selection)].sort_values("val_loss").iloc[0]


@asset(group_name=MODELS_GROUP, ins={"finetuned_models": AssetIn()},
       required_resource_keys={"settings", "mlflow", "target_survey"},
       description="Accuracy, completeness and purity of each class, ROC AUC: mean and spread over seeds "
                   "per task x budget x strategy, with learning curves; sets each task's champion alias.")
def evaluation_table(context: AssetExecutionContext, finetuned_models: pd.DataFrame) -> pd.DataFrame:
    settings: GalpipeSettings = context.resources.settings
    if finetuned_models is None or len(finetuned_models) == 0:
        raise ValueError("no finetuned_models partition is materialized yet: nothing to evaluate")
    summary = summarise(finetuned_models)
    png = plot_learning_curves(summary, settings.run_dir / "learning_curves.png")
    tracker = context.resources.mlflow.tracker()
    survey = context.resources.target_survey.instrument
    table_csv = settings.run_dir / "evaluation_table.csv"
    atomic_write_bytes(table_csv, lambda tmp: summary.to_csv(tmp, index=False))
    with tracker.run("evaluation-table", {**run_tags(context), "galpipe.kind": "evaluation"}, {}) as run_id:
        tracker.log_artifact(run_id, png, "plots")  # the learning curves, beside the runs they summarise
        tracker.log_artifact(run_id, table_csv)
    champions = {}
    for task, runs in finetuned_models[finetuned_models.strategy != DIRECT].groupby("task"):
        chosen = choose_champion(runs)
        version = chosen.model_uri.rsplit("/", 1)[-1]
        tracker.set_alias(f"galpipe-{task}-{survey}", "champion", version)
        champions[task] = (f"{chosen.model_uri} ({chosen.strategy}, {chosen.selection} selection, "
                           f"N={chosen.label_budget}, seed {chosen.seed})")
    shown = summary[["task", "label_budget", "strategy", "selection", "n_seeds", "accuracy_mean", "accuracy_std",
                     "completeness_1_mean", "purity_1_mean", "roc_auc_mean"]].round(3)
    goals = adaptation_goals(summary)
    goals_csv = settings.run_dir / "adaptation_goals.csv"
    if len(goals):  # the adaptation strategies' goals, where they ran
        atomic_write_bytes(goals_csv, lambda tmp: goals.to_csv(tmp, index=False))
    else:
        goals_csv.unlink(missing_ok=True)
    context.add_output_metadata({
        "table": MetadataValue.md(shown.to_markdown(index=False)),
        "champions": MetadataValue.json(champions),
        "learning_curves": image_md(png),
        **({"adaptation_goals": MetadataValue.md(goals.round(3).to_markdown(index=False))} if len(goals) else {}),
    })
    return summary


MODEL_ASSETS = [model_inputs_asset("source"), model_inputs_asset("target"), pretrained_model, finetuned_models,
                evaluation_table]
