"""The paper's protocol, and what galpipe adds to it, as plain functions that take data and a
profile and return results; every training run is logged and registered through a `Recorder`.

- `pretrain`: one task's classifier trained on the source survey (a fixed 15% held out by
  object id for validation), evaluated there and applied directly to the target test set; and,
  for the `contrastive` strategies, the networks pretrained without labels on the target images.
- `finetune`: one task x label budget: for each seed and label selection the same N galaxies
  for every strategy, each strategy after the teacher it learns from; budget 0 is the source
  model applied directly, plus the strategies that need no target label.
- `choose_champion`: the run to serve, chosen without the test set.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from galpipe.adaptation import AdaptationData, embeddings
from galpipe.evaluation import aligned_predictions, binary_metrics, has_predictions, plot_confusion, with_selection
from galpipe.experiment.selections import RANDOM, SELECTIONS
from galpipe.experiment.strategies import DIRECT, STRATEGIES, Contrastive, SelfSupervisedStart, Strategy, StrategyRun
from galpipe.framing import field_text
from galpipe.links import FINETUNING, STAGE_TAG
from galpipe.models import INPUT_SHAPE, SEED_ENSEMBLE, SeedEnsemble, build_model, count_flops
from galpipe.preprocessing import ModelInputs
from galpipe.profiles import Profile
from galpipe.statistics import accuracy
from galpipe.tracking import Tracker, load_registered_model, model_version, registered_model_name, with_retry
from galpipe.training import TrainConfig, predict_proba, train_classifier
from galpipe.transfer import (
    LabelledSample,
    labelled_sample,
    parse_budget,
    require_two_classes,
    split_by_hash,
    split_train_validation,
)

SOURCE_VALIDATION_FRACTION = 0.15


@dataclass
class TransferData:
    """Both surveys' catalogues and model inputs: the source catalogue with its labels, the
    target's matched catalogue with its fixed splits."""

    source_catalog: pd.DataFrame
    source_inputs: ModelInputs
    matched_catalog: pd.DataFrame
    target_inputs: ModelInputs
    # The source counterparts of the target test galaxies (the same objects, their labels carried
    # across) are left out of training on the source, so no test label is learnt there.
    include_test_counterparts: bool = False

    def test_counterparts(self) -> np.ndarray:
        """Source object ids of the target test galaxies' cross-matched counterparts."""
        if "source_object_id" not in self.matched_catalog:
            return np.array([], dtype=object)
        test = self.matched_catalog[self.matched_catalog.split == "test"]
        return test.source_object_id.dropna().to_numpy()

    def source_sample(self, task: str) -> tuple[LabelledSample, LabelledSample]:
        """(train, validation) of the source galaxies labelled for `task`, without the target test
        galaxies' counterparts unless `include_test_counterparts`."""
        sample = labelled_sample(self.source_catalog, self.source_inputs.index, task)
        if not self.include_test_counterparts:
            sample = sample.subset(~np.isin(sample.object_id, self.test_counterparts()))
        require_two_classes(sample, f"source catalogue, task {task}")
        return split_by_hash(sample, SOURCE_VALIDATION_FRACTION, salt="source-validation")

    def target_split(self, task: str, split: str) -> LabelledSample:
        """The target galaxies of `split` (pool or test) labelled for `task`, in row order."""
        sample = labelled_sample(self.matched_catalog[self.matched_catalog.split == split],
                                 self.target_inputs.index, task)
        return sorted_by_row(sample) if split == "test" else sample

    def adaptation(self, task: str) -> AdaptationData:
        """Target then source inputs in one array, for the strategies that read unlabelled target
        images: every target galaxy outside the test set, labelled or not."""
        source_train, source_validation = self.source_sample(task)
        index = self.target_inputs.index
        not_test = ~index.object_id.isin(self.matched_catalog.object_id[self.matched_catalog.split == "test"])
        unlabelled = index[(index.status == "ok") & not_test].row.to_numpy()
        return AdaptationData.build(self.target_inputs.array(), self.source_inputs.array(), source_train,
                                    source_validation, unlabelled)


@dataclass
class Recorder:
    """Where a run is logged: the MLflow tracker, tags for every run (e.g. the Dagster run that
    made it), the folder for plots and checkpoints, and a line logger."""

    tracker: Tracker
    tags: dict
    run_dir: Path
    log: Callable[[str], None] = print

    def evaluate(self, run_id: str, model, x, sample: LabelledSample, prefix: str, title: str,
                 model_id: str | None = None) -> dict:
        """Test metrics and a confusion-matrix plot, logged to the run; the probabilities, per
        galaxy of `sample`, in the returned dict's `probability`. The time the science took
        (prediction, metrics, plot) is logged as `<prefix>_evaluate_seconds`, so that what a
        partition spends in Dagster and MLflow can be told apart from it (bench/run.py). `model_id`:
        the logged model the metrics belong to (Tracker.log_model)."""
        started = time.perf_counter()
        probability = predict_proba(model, x[sample.row])
        metrics = binary_metrics(sample.label, probability)
        png = plot_confusion(sample.label, probability, self.run_dir / "plots" / f"{run_id}_{prefix}_confusion.png",
                             title)
        seconds = time.perf_counter() - started
        self.tracker.log_metrics(run_id, {**{f"{prefix}_{k}": v for k, v in metrics.items()},
                                          f"{prefix}_evaluate_seconds": seconds}, model_id=model_id)
        self.tracker.log_artifact(run_id, png, "plots")
        return {**metrics, "probability": probability}


def train_config(profile: Profile, task: str, **changes) -> TrainConfig:
    weighting = "balanced" if task in profile.class_balanced_tasks else "none"
    settings = {"batch_size": profile.batch_size, "patience": profile.patience, "class_weighting": weighting,
                "precision": profile.precision, "learning_rate": profile.learning_rate,
                "weight_decay": profile.weight_decay, "schedule": profile.schedule, "augmentation": profile.augmentation}
    return TrainConfig(**{**settings, **changes})


def finetuning_config(profile: Profile, task: str, seed: int, strategy: Strategy) -> TrainConfig:
    """train_config for a fine-tuning run of `strategy`, with its own learning rate."""
    return strategy.config(train_config(profile, task, seed=seed, max_epochs=profile.finetune_max_epochs,
                                        min_steps=profile.finetune_min_steps))


def pretraining_config(profile: Profile, task: str, seed: int) -> TrainConfig:
    """train_config for pretraining on the source, with the profile's pretraining augmentation."""
    return train_config(profile, task, max_epochs=profile.pretrain_max_epochs, seed=seed,
                        augmentation=profile.pretraining_augmentation or profile.augmentation)


def model_tags(profile: Profile, task: str, role: str, inputs: ModelInputs, **more) -> dict:
    """On each registered model version: what `galpipe predict` needs to prepare its inputs like
    `inputs`, those it was trained (or, budget 0, adapted) on."""
    return {"task": task, "role": role, "architecture": profile.architecture, "input_mode": profile.input_mode,
            "colour_rendering": profile.colour_rendering, "field_arcsec": field_text(inputs.model_field_arcsec),
            **more}


def sorted_by_row(sample: LabelledSample) -> LabelledSample:
    """Rows in increasing order: memory-mapped reads stay sequential."""
    return sample.subset(np.argsort(sample.row))


def pretrain(profile: Profile, task: str, data: TransferData, source_survey: str, recorder: Recorder,
             source_params: dict | None = None, target_survey: str = "target") -> dict:
    """The source classifier of `task` for each of the profile's seeds, logged and registered, with
    its source validation and direct-on-target test metrics: `seeds` maps each seed to its model;
    the first seed's are also at the top level. Fine-tuning seed k starts from pretraining seed k.
    `source_params`: how the source survey was made (its realism settings), logged with each run.
    With `contrastive` strategies in the profile, each seed's entry also holds, under
    `self_supervised`, each one's network pretrained without labels on the target images."""
    runs = {}
    without_labels = self_supervised_strategies(profile)
    adaptation = data.adaptation(task) if without_labels else None  # the unlabelled target images
    for seed in profile.seeds:
        runs[str(seed)] = _pretrain_seed(profile, task, data, source_survey, recorder, seed, source_params or {})
        if without_labels:
            runs[str(seed)]["self_supervised"] = {
                name: _self_supervised(profile, task, data, adaptation, name, seed, runs[str(seed)]["model_uri"],
                                       target_survey, recorder) for name in without_labels}
    return {**runs[str(profile.seeds[0])], "seeds": runs}


def _pretrain_seed(profile: Profile, task: str, data: TransferData, source_survey: str, recorder: Recorder,
                   seed: int, source_params: dict) -> dict:
    train, validation = data.source_sample(task)
    test = data.target_split(task, "test")
    x_source, x_target = data.source_inputs.array(), data.target_inputs.array()
    config = pretraining_config(profile, task, seed)
    model = build_model(profile.architecture, seed=config.seed)
    params = {"task": task, "survey": source_survey, "architecture": profile.architecture, "role": "pretrained",
              "n_train": len(train), "n_validation": len(validation), "flops_per_image": count_flops(model),
              "test_counterparts_included": data.include_test_counterparts, **config.as_params(),
              **{f"source_{key}": value for key, value in source_params.items()}}
    tracker = recorder.tracker
    with tracker.run(f"pretrain-{task}-{source_survey}-seed{seed}", {**recorder.tags, STAGE_TAG: "pretraining"},
                     params) as run_id:
        history = train_classifier(model, x_source, train.row, train.label, validation.row, validation.label,
                                   config, recorder.run_dir / "checkpoints" / f"pretrain-{task}-seed{seed}.pt",
                                   on_epoch=lambda r: recorder.log(f"{task} seed {seed} epoch {r['epoch']}: {r}"))
        tracker.log_history(run_id, history)
        source_metrics = recorder.evaluate(run_id, model, x_source, sorted_by_row(validation), "source_val",
                                           f"{task}: {source_survey} validation")
        direct_metrics = recorder.evaluate(run_id, model, x_target, test, "target_test",
                                           f"{task}: applied directly to target")
        model_uri, version, _ = tracker.log_and_register_model(
            run_id, model, np.array(x_source[:1]), registered_model_name(tracker.experiment_name, task, source_survey),
            model_tags(profile, task, "pretrained", data.source_inputs, seed=seed))
    return {"task": task, "seed": seed, "model_uri": model_uri, "version": version, "run_id": run_id,
            "epochs": len(history), "source_val": _without_probability(source_metrics),
            "target_test_direct": _without_probability(direct_metrics)}


SELF_SUPERVISED = "self_supervised"  # the role of a network pretrained without labels
SELF_SUPERVISED_SUFFIX = "-self-supervised"  # of its registered name, after the task's classifiers'


def self_supervised_fingerprint(unlabelled_rows: np.ndarray, config: TrainConfig) -> str:
    """What a self-supervised network was made from: the unlabelled images (their rows) and the
    settings (seed included). Fine-tuning starts from the registered network only while both are
    the same: new target labels (the labels sensor re-runs fine-tuning, not pretraining) can move
    galaxies into the test set, which the network must not have seen."""
    digest = hashlib.sha256(np.sort(np.asarray(unlabelled_rows, dtype=np.int64)).tobytes())
    digest.update(repr(sorted(config.as_params().items())).encode())
    return digest.hexdigest()


def self_supervised_strategies(profile: Profile) -> list[str]:
    """The profile's strategies that first pretrain without labels on the target images."""
    names = dict.fromkeys([*profile.strategies, *profile.adaptation_strategies])
    return [name for name in names if isinstance(STRATEGIES.get(name), Contrastive)]


def _self_supervised(profile: Profile, task: str, data: TransferData, adaptation: AdaptationData, name: str,
                     seed: int, source_model_uri: str, target_survey: str, recorder: Recorder) -> dict:
    """The first stage of the `Contrastive` strategy `name` for `seed` (SimCLR on the unlabelled
    target images, from a fresh network or from the seed's source model as registered), as a
    run of its own, registered as `<experiment>-<task>-<target>-self-supervised`: a pretrained
    model that every label budget's fine-tuning starts from, made once."""
    strategy: Contrastive = STRATEGIES.get(name)
    config = finetuning_config(profile, task, seed, strategy)  # what the fine-tuning run would have used
    tracker = recorder.tracker
    source_model = None if strategy.from_scratch else load_registered_model(tracker.tracking_uri, source_model_uri)
    params = {"task": task, "survey": target_survey, "architecture": profile.architecture, "role": SELF_SUPERVISED,
              "strategy": name, "contrastive_start": "scratch" if strategy.from_scratch else "source",
              "pretrained_model_uri": "" if strategy.from_scratch else source_model_uri,
              "n_unlabelled_target": len(adaptation.unlabelled_rows), "contrastive_epochs": strategy.epochs,
              "contrastive_temperature": strategy.temperature, **config.as_params()}
    with tracker.run(f"self-supervised-{name}-{task}-{target_survey}-seed{seed}",
                     {**recorder.tags, STAGE_TAG: "pretraining"}, params) as run_id:
        model, history = strategy.pretrain_without_labels(source_model, profile.architecture, adaptation, config)
        recorder.log(f"{task} seed {seed}: {name}'s self-supervised pretraining, loss "
                     f"{history[0]['contrastive_loss']:.3f} -> {history[-1]['contrastive_loss']:.3f}")
        tracker.log_history(run_id, history, keys=("contrastive_loss",))
        final_loss = history[-1]["contrastive_loss"]
        tracker.log_metrics(run_id, {"contrastive_final_loss": final_loss})
        model_uri, version, _ = tracker.log_and_register_model(
            run_id, model, np.array(data.target_inputs.array()[:1]),
            registered_model_name(tracker.experiment_name, task, target_survey) + SELF_SUPERVISED_SUFFIX,
            model_tags(profile, task, SELF_SUPERVISED, data.target_inputs, seed=seed, strategy=name))
    return {"model_uri": model_uri, "version": version, "run_id": run_id, "contrastive_final_loss": final_loss,
            "fingerprint": self_supervised_fingerprint(adaptation.unlabelled_rows, config)}


def source_for_seed(pretrained: dict, seed: int) -> dict:
    """The pretrained model fine-tuning seed `seed` starts from: pretraining seed `seed`, or the one
    model of a partition pretrained before there was one per seed."""
    return pretrained.get("seeds", {}).get(str(seed), pretrained)


def _without_probability(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "probability"}


def per_galaxy_predictions(test: LabelledSample, probability: np.ndarray) -> dict:
    """A run's test predictions, per galaxy, for the evaluation table's intervals and paired tests.
    Unrounded: rounded to 6 decimals, a saturated model's probabilities tied at 1.0 and the paired
    tests' ROC AUC was not the run's own."""
    return {"test_object_ids": [str(i) for i in test.object_id], "test_labels": test.label.astype(int).tolist(),
            "test_probabilities": np.asarray(probability, dtype=float).tolist()}


def strategies_for(profile: Profile, budget_key: str, selection: str | None) -> list[str]:
    """The strategies a budget's runs use, teachers first. Budget 0 (`selection` None): those that
    need no target label. A non-random selection: the profile's `selection_strategies` only."""
    adapting = budget_key in profile.adaptation_budgets
    adaptation = list(profile.adaptation_strategies) if adapting else []
    if selection is None:
        return [s for s in adaptation if STRATEGIES.get(s).runs_without_labels]
    names = [*profile.strategies, *adaptation]
    if selection != RANDOM:
        names = [s for s in names if s in profile.selection_strategies]
    for name in names:  # a teacher is an explicit dependency: never silently swapped for another
        teacher = STRATEGIES.get(name).teacher
        if teacher is not None and teacher not in names:
            raise ValueError(f"strategy {name!r} learns from {teacher!r}, which this run does not train; "
                             f"add {teacher!r} to the profile's strategies")
    return sorted(names, key=lambda s: (STRATEGIES.get(s).teacher is not None, names.index(s)))


def selections_for(profile: Profile, budget_key: str) -> tuple[str, ...]:
    return profile.selections if budget_key in profile.adaptation_budgets else (RANDOM,)


def finetune(profile: Profile, task: str, budget_key: str, data: TransferData, pretrained: dict,
             target_survey: str, recorder: Recorder) -> pd.DataFrame:
    """One row per run of the (task, budget) partition: strategy, selection, seed, test metrics,
    model URI, MLflow run and best validation loss."""
    pool = data.target_split(task, "pool")
    test = data.target_split(task, "test")
    require_two_classes(test, f"target test set, task {task}")
    budget = parse_budget(budget_key, len(pool))
    x = data.target_inputs.array()
    experiment = recorder.tracker.experiment_name
    sources = {seed: source_for_seed(pretrained, seed) for seed in profile.seeds}
    loaded = {}  # model URI -> module: each pretrained model loaded once

    def model_at(uri: str):
        if uri not in loaded:
            loaded[uri] = load_registered_model(recorder.tracker.tracking_uri, uri)
        return loaded[uri]

    def source_model_of(seed: int):
        return model_at(sources[seed]["model_uri"])

    def self_supervised_of(seed: int, name: str, config: TrainConfig) -> SelfSupervisedStart | None:
        """The strategy's network pretrained without labels with the seed's source model, if it was
        made from this run's unlabelled images and settings (self_supervised_fingerprint); else None
        (also for a pretrained model made before there was one), and the strategy makes it itself."""
        made = sources[seed].get("self_supervised", {}).get(name)
        if not made or made.get("fingerprint") != self_supervised_fingerprint(adaptation.unlabelled_rows, config):
            return None
        return SelfSupervisedStart(model_at(made["model_uri"]), made["model_uri"], made["contrastive_final_loss"])

    # One source model per seed: then even deterministic strategies (AdaBN) differ between seeds.
    one_source = len({source["model_uri"] for source in sources.values()}) == 1
    base = {"task": task, "label_budget": budget, "budget_key": budget_key}
    rows = []
    selections = selections_for(profile, budget_key)
    wanted = {s for selection in ([None] if budget == 0 else selections)
              for s in strategies_for(profile, budget_key, selection)}
    first_model = source_model_of(profile.seeds[0])
    skipped = {s for s in wanted if STRATEGIES.get(s).needs_batch_norm and not first_model.batch_norm_layers()}
    for name in sorted(skipped):
        recorder.log(f"{profile.architecture} has no batch normalisation: {name} skipped")
    adaptation = (data.adaptation(task) if any(STRATEGIES.get(s).uses_unlabelled_target for s in wanted - skipped)
                  else None)

    def run(name: str, selection: str, seed: int, train, validation, teacher=None):
        strategy: Strategy = STRATEGIES.get(name)
        source = sources[seed]
        config = finetuning_config(profile, task, seed, strategy)
        params = {"task": task, "survey": target_survey, "architecture": profile.architecture, "strategy": name,
                  "selection": selection, "label_budget": budget, "n_train": len(train) if train else 0,
                  "n_validation": len(validation) if validation else 0,
                  "pretrained_model_uri": source["model_uri"], **config.as_params()}
        tags = {**recorder.tags, "pretrained_run_id": source["run_id"], STAGE_TAG: FINETUNING}
        checkpoint = recorder.run_dir / "checkpoints" / f"{task}|{budget_key}-{name}-{selection}-{seed}.pt"
        with recorder.tracker.run(f"{name}-{task}-{budget_key}-{selection}-seed{seed}", tags, params) as run_id:
            model, history, extra = strategy.train(StrategyRun(
                source_model_of(seed), x, train, validation, config, profile.architecture, checkpoint,
                adaptation if strategy.uses_unlabelled_target else None, teacher,
                self_supervised_of(seed, name, config) if isinstance(strategy, Contrastive) else None))
            recorder.tracker.log_params(run_id, extra)
            # The model logged before its metrics, so its test metrics are linked to it without MLflow reading every
            # metric back (0.2 s of a partition of 6 runs); registered only once its evaluation has succeeded.
            logged = recorder.tracker.log_model(run_id, model, np.array(x[test.row[:1]]))
            recorder.tracker.log_history(run_id, history)
            evaluated = recorder.evaluate(run_id, model, x, test, "target_test", f"{task} {name} N={budget} ({selection})",
                                          model_id=logged.model_id)
            metrics = {**_without_probability(evaluated), **per_galaxy_predictions(test, evaluated["probability"])}
            registered = recorder.tracker.register(
                logged, registered_model_name(experiment, task, target_survey),
                model_tags(profile, task, name, data.target_inputs, label_budget=budget, seed=seed, selection=selection))
        recorder.log(f"{task} N={budget} {name} ({selection}) seed {seed}: accuracy {metrics['accuracy']:.3f}")
        rows.append({**base, "strategy": name, "selection": selection, "seed": seed, **metrics,
                     "pretrained_model_uri": source["model_uri"], "model_uri": registered.uri, "run_id": run_id,
                     "val_loss": min((r["val_loss"] for r in history), default=np.nan)})
        return model

    for seed in profile.seeds:
        source, source_model = sources[seed], source_model_of(seed)
        repeat = one_source and seed != profile.seeds[0]  # the same source model as the first seed's
        if budget == 0:  # the source model applied directly, and adaptation without any target label
            if not repeat:  # evaluated here, not copied: the test set may have grown since pretraining
                probability = predict_proba(source_model, x[test.row])
                rows.append({**base, "strategy": DIRECT, "selection": "none", "seed": seed,
                             **binary_metrics(test.label, probability), **per_galaxy_predictions(test, probability),
                             "pretrained_model_uri": source["model_uri"], "model_uri": source["model_uri"],
                             "run_id": source["run_id"], "val_loss": np.nan})
            for name in strategies_for(profile, budget_key, None):
                if name not in skipped and (STRATEGIES.get(name).random_without_labels or not repeat):
                    run(name, "none", seed, None, None)
            continue
        # The seed's source model's view of the pool, for the selections that need one.
        probability = predict_proba(source_model, x[pool.row]) \
            if any(SELECTIONS.get(s).needs_probability for s in selections) else None
        pool_embeddings = embeddings(source_model, x, pool.row) \
            if any(SELECTIONS.get(s).needs_embeddings for s in selections) else None
        for selection in selections:
            chosen = SELECTIONS.get(selection).select(pool, budget, seed, probability, pool_embeddings)
            train, validation = split_train_validation(chosen, seed)
            models = {}  # this seed and selection's models: the teachers of later strategies
            for name in strategies_for(profile, budget_key, selection):
                if name not in skipped:
                    models[name] = run(name, selection, seed, train, validation,
                                       models.get(STRATEGIES.get(name).teacher))
    return pd.DataFrame(rows)


CHAMPION_RULE = ("the strategy trained on the most target labels; of the strategies (and label selections) at that "
                 "budget, the one with the lowest validation loss averaged over seeds; served as all its seeds "
                 "averaged (a seed ensemble: the mean of their probabilities), or as its one run with one seed. "
                 "The test set is never looked at, so the champion's test metrics stay unbiased, and a champion "
                 "may score below another run (even the model applied directly) on the test set.")


CHAMPION_COLUMNS = ["task", "registered_model", "version", "strategy", "selection", "label_budget", "seeds",
                    "strategy_mean_val_loss", "runner_up_val_loss", "test_accuracy", "seed_test_accuracy_mean",
                    "direct_test_accuracy", "run_id"]


def choose_champion(runs: pd.DataFrame) -> pd.Series:
    """The run to serve, chosen without the test set (so the metrics reported on it stay
    unbiased): trained on the most target labels; of the strategies (x label selections), the
    lowest validation loss averaged over seeds (each seed has its own validation galaxies); of
    its seeds, the lowest."""
    runs = with_selection(runs[runs.strategy != DIRECT])
    largest = runs[runs.label_budget == runs.label_budget.max()]
    strategy, selection = largest.groupby(["strategy", "selection"]).val_loss.mean().idxmin()
    return largest[(largest.strategy == strategy) & (largest.selection == selection)].sort_values("val_loss").iloc[0]


def crown_champions(tracker: Tracker, runs: pd.DataFrame, target_survey: str, tags: dict | None = None) -> pd.DataFrame:
    """Each task's champion (CHAMPION_RULE) gets the `champion` alias of its registered model: the
    seed ensemble of the chosen strategy's seeds (registered_seed_ensemble), or its one run.
    Returns a row per task: what won, and why (its validation loss against the other strategies'
    at that budget), with its test accuracy beside its seeds' own and the model applied directly's
    (champion_scores)."""
    champions = []
    for task, task_runs in runs.groupby("task"):
        trained = with_selection(task_runs[task_runs.strategy != DIRECT])
        if trained.empty:
            continue
        chosen = choose_champion(trained)
        name = registered_model_name(tracker.experiment_name, task, target_survey)
        at_budget = trained[trained.label_budget == chosen.label_budget]
        seeds = at_budget[(at_budget.strategy == chosen.strategy) & (at_budget.selection == chosen.selection)]
        if "budget_key" in seeds:  # one partition's runs: two budget keys (300 and `full`) may hold as many labels
            seeds = seeds[seeds.budget_key == chosen.budget_key]
        seeds = seeds.sort_values("seed")
        if len(seeds) > 1:
            version, run_id = registered_seed_ensemble(tracker, seeds, name, tags or {})
        else:
            version, run_id = chosen.model_uri.rsplit("/", 1)[-1], chosen.run_id
        tracker.set_alias(name, "champion", version)
        losses = at_budget.groupby(["strategy", "selection"]).val_loss.mean()
        direct = task_runs[task_runs.strategy == DIRECT]
        direct = direct[direct.seed.isin(seeds.seed)] if direct.seed.isin(seeds.seed).any() else direct
        champions.append({
            "task": task, "registered_model": name, "version": version, "strategy": chosen.strategy,
            "selection": chosen.selection, "label_budget": int(chosen.label_budget),
            "seeds": seed_list(seeds), "strategy_mean_val_loss": float(losses.min()),
            "runner_up_val_loss": float(losses.nsmallest(2).iloc[-1]) if len(losses) > 1 else np.nan,
            **champion_scores(seeds, direct), "run_id": run_id})
    return pd.DataFrame(champions, columns=CHAMPION_COLUMNS)


def seed_list(runs: pd.DataFrame) -> str:
    """The runs' seeds as the champions table and a seed ensemble's `seeds` tag both write them: "0,1"."""
    return ",".join(str(int(seed)) for seed in runs.seed)


def champion_scores(seeds: pd.DataFrame, direct: pd.DataFrame) -> dict:
    """Test accuracy of the champion (its seeds' mean probability, as it is served), of its seeds
    one by one (their mean), and of the model applied directly (its seeds averaged likewise), all
    on the test galaxies every one of these runs was evaluated on. Without per-galaxy predictions
    (runs from before them), the runs' own accuracies, and none for an ensemble."""
    if not has_predictions(seeds):
        return {"test_accuracy": float(seeds.accuracy.iloc[0]) if len(seeds) == 1 else np.nan,
                "seed_test_accuracy_mean": float(seeds.accuracy.mean()),
                "direct_test_accuracy": float(direct.accuracy.mean()) if len(direct) else np.nan}
    scored = pd.concat([seeds, direct]) if len(direct) and has_predictions(direct) else seeds
    common = set.intersection(*(set(ids) for ids in scored.test_object_ids))
    _, labels, probabilities = aligned_predictions(seeds, common)
    scores = {"test_accuracy": accuracy(labels, probabilities.mean(axis=0)),
              "seed_test_accuracy_mean": float(np.mean([accuracy(labels, p) for p in probabilities])),
              "direct_test_accuracy": float(direct.accuracy.mean()) if len(direct) else np.nan}
    if scored is not seeds:
        scores["direct_test_accuracy"] = accuracy(labels, aligned_predictions(direct, common)[2].mean(axis=0))
    return scores


# What `galpipe predict` needs from a version (model_tags), and what says which run it is, as a seed ensemble's
# members carry them; the rest of their tags (e.g. the seed, a past re-evaluation's run) are theirs alone.
ENSEMBLE_TAGS = ("task", "role", "architecture", "input_mode", "colour_rendering", "field_arcsec", "label_budget",
                 "selection")


def registered_seed_ensemble(tracker: Tracker, seeds: pd.DataFrame, registered_name: str, tags: dict) -> tuple[str, str]:
    """(version, MLflow run) of the SeedEnsemble of `seeds` (one strategy's runs, one per seed),
    registered under `registered_name`, tagged `kind` seed_ensemble, `ensemble_of` (its members'
    versions), `seeds` and the members' ENSEMBLE_TAGS. Registered once: an evaluation run again
    over the same runs finds the version it made. Its run logs the test metrics of the seeds' mean
    probability, on the test galaxies all of them were evaluated on."""
    member_versions = ",".join(uri.rsplit("/", 1)[-1] for uri in seeds.model_uri)
    # Digits and commas only in the filter: a name may hold a quote, so it is compared here instead.
    existing = [v for v in with_retry(lambda: tracker.client.search_model_versions(
        f"tags.ensemble_of = '{member_versions}'")) if v.name == registered_name]
    if existing:
        found = max(existing, key=lambda v: int(v.version))
        return str(found.version), found.run_id
    first = seeds.iloc[0]
    member_tags = model_version(tracker.tracking_uri, first.model_uri).tags
    ensemble = SeedEnsemble.of([load_registered_model(tracker.tracking_uri, uri) for uri in seeds.model_uri])
    params = {"task": first.task, "strategy": first.strategy, "selection": first.selection,
              "label_budget": int(first.label_budget), "seeds": seed_list(seeds),
              "member_runs": ",".join(seeds.run_id), "ensemble_of": member_versions}
    run_name = f"seed-ensemble-{first.task}-{first.strategy}-{first.label_budget}"
    # Its own stage: the fine-tuning runs view (and its best-first order) stays one run per trained model.
    with tracker.run(run_name, {**tags, STAGE_TAG: SEED_ENSEMBLE}, params) as run_id:
        if has_predictions(seeds):
            _, labels, probabilities = aligned_predictions(seeds)
            tracker.log_metrics(run_id, {f"target_test_{k}": v
                                         for k, v in binary_metrics(labels, probabilities.mean(axis=0)).items()})
        version_tags = {**{k: member_tags[k] for k in ENSEMBLE_TAGS if k in member_tags}, "kind": SEED_ENSEMBLE,
                        "seeds": params["seeds"], "ensemble_of": member_versions}
        version = tracker.log_and_register_model(run_id, ensemble, np.zeros((1, *INPUT_SHAPE), np.float32),
                                                 registered_name, version_tags).version
    return version, run_id
