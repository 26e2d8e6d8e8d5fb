"""Everything registered by name works by name: every architecture trains, saves and predicts,
every fine-tuning strategy trains from a source model on the shifted toy surveys (with and
without labels, as it declares), every label selection picks N galaxies of both classes, and
every survey source kind is a resource that answers the same questions."""

import numpy as np
import pytest
import torch

from galpipe.adaptation import AdaptationData, embeddings
from galpipe.defs.surveys import SOURCE_KINDS, SurveySource
from galpipe.experiment.selections import SELECTIONS
from galpipe.experiment.strategies import STRATEGIES, StrategyRun
from galpipe.models import ARCHITECTURES, build_model, load_model_files, save_model_files
from galpipe.registry import Registry
from galpipe.tasks import DEFAULT_TASKS, TASKS
from galpipe.training import TrainConfig, predict_proba, train_classifier
from galpipe.transfer import split_train_validation
from galpipe_tests.test_adaptation import _sample
from galpipe_tests.test_models_training import _toy_survey

TOY = {"batch_size": 16, "device": "cpu", "augment": False, "patience": 2, "max_epochs": 2}


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(5)
    x_source, y_source = _toy_survey(120, rng)
    x_target, y_target = _toy_survey(100, rng, shifted=True)
    source_model = build_model("compact", seed=0)
    train_classifier(source_model, x_source, np.arange(100), y_source[:100], np.arange(100, 120), y_source[100:],
                     TrainConfig(**TOY, seed=0))
    data = AdaptationData.build(x_target, x_source, _sample(np.arange(100), y_source),
                                _sample(np.arange(100, 120), y_source), np.arange(60))
    train, validation = split_train_validation(_sample(np.arange(60, 90), y_target), seed=0)
    return {"model": source_model, "x": x_target, "y": y_target, "data": data, "train": train,
            "validation": validation}


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_every_architecture_trains_saves_and_predicts(name, toy, tmp_path):
    model = build_model(name, seed=1)
    history = train_classifier(model, toy["x"], np.arange(40), toy["y"][:40], np.arange(40, 50), toy["y"][40:50],
                               TrainConfig(**{**TOY, "max_epochs": 1}))
    assert len(history) == 1 and np.isfinite(history[0]["val_loss"])
    assert model.embed(torch.from_numpy(toy["x"][:2])).shape[0] == 2
    loaded = load_model_files(*save_model_files(model, tmp_path))
    np.testing.assert_array_equal(predict_proba(loaded, toy["x"]), predict_proba(model, toy["x"]))


def _moved(model, source, part: str) -> bool:
    """Whether any weight of `part` ("features" or "head") differs from the source model's."""
    mine, theirs = getattr(model, part).state_dict(), getattr(source, part).state_dict()
    return any(not torch.equal(mine[k], theirs[k]) for k in mine if mine[k].is_floating_point())


# Both numeric paths, on any CPU; contrastive_simulation's bf16 path is contrastive's (the slowest pair).
@pytest.mark.parametrize(("name", "precision"), [(name, precision) for name in STRATEGIES.names()
                                                 for precision in ("fp32", "bf16")
                                                 if (name, precision) != ("contrastive_simulation", "bf16")])
def test_every_strategy_trains_from_the_source_model(name, precision, toy):
    strategy = STRATEGIES.get(name)
    settings = TrainConfig(**TOY, precision=precision)
    teacher = None
    if strategy.teacher:  # trained first, as the protocol does
        teacher_run = StrategyRun(toy["model"], toy["x"], toy["train"], toy["validation"],
                                  STRATEGIES.get(strategy.teacher).config(settings), "compact")
        teacher, _, _ = STRATEGIES.get(strategy.teacher).train(teacher_run)
    label_budgets = [(toy["train"], toy["validation"])] + ([(None, None)] if strategy.runs_without_labels else [])
    for train, validation in label_budgets:
        run = StrategyRun(toy["model"], toy["x"], train, validation, strategy.config(settings), "compact",
                          adaptation=toy["data"] if strategy.uses_unlabelled_target else None,
                          teacher=teacher if train is not None else None)
        model, history, extra = strategy.train(run)
        probability = predict_proba(model, toy["x"])
        assert model is not toy["model"] and np.isfinite(probability).all()
        assert history or (name == "adabn" and train is None)  # AdaBN without labels trains nothing
        if strategy.uses_unlabelled_target:
            assert extra["n_unlabelled_target"] == 60
        # It trained what it says: the head always (but AdaBN without labels), the features unless
        # frozen (AdaBN's moved statistics count: they are in the state).
        assert _moved(model, toy["model"], "head") == (not (name == "adabn" and train is None))
        assert _moved(model, toy["model"], "features") == (name != "head_only")


def test_a_strategy_that_needs_batch_norm_refuses_a_network_without(toy):
    assert STRATEGIES.get("adabn").needs_batch_norm and not build_model("ds18").batch_norm_layers()
    with pytest.raises(ValueError, match="no batch normalisation"):
        STRATEGIES.get("adabn").train(StrategyRun(build_model("ds18"), toy["x"], None, None, TrainConfig(**TOY), "ds18",
                                                  adaptation=toy["data"]))


@pytest.mark.parametrize("name", SELECTIONS.names())
def test_every_selection_picks_n_galaxies_of_both_classes_the_same_way_each_time(name, toy):
    pool = _sample(np.arange(100), toy["y"])
    probability = predict_proba(toy["model"], toy["x"])
    points = embeddings(toy["model"], toy["x"], pool.row)
    chosen = [SELECTIONS.get(name).select(pool, 12, seed=3, probability=probability, embeddings=points)
              for _ in range(2)]
    assert len(chosen[0]) == 12 and len(set(chosen[0].object_id)) == 12 and set(chosen[0].label) == {0, 1}
    assert chosen[0].object_id.tolist() == chosen[1].object_id.tolist()


@pytest.mark.parametrize("kind", SOURCE_KINDS.names())
def test_every_survey_source_kind_is_a_resource_answering_the_same_questions(kind):
    source = SOURCE_KINDS.get(kind)()
    assert isinstance(source, SurveySource) and source.kind == kind
    for method in ("load_catalog", "build_cutouts"):  # what each kind must do its own way
        assert getattr(type(source), method) is not getattr(SurveySource, method), f"{kind} lacks {method}"
    shape = source.expected_shape()
    assert shape is None or (len(shape) == 2 and min(shape) > 8)
    assert source.get_framing().kind in source.framings and source.name
    assert isinstance(source.owns_files(), bool) and (source.bands is None or len(source.bands) >= 1)


def test_the_default_tasks_are_registered_and_an_unknown_name_is_named():
    assert all(task in TASKS for task in DEFAULT_TASKS)
    registry = Registry("widget")
    registry.register("a", 1)
    with pytest.raises(KeyError, match=r"unknown widget 'b'; known: \['a'\]"):
        registry.get("b")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a", 2)


def test_the_readme_strategy_example_trains(toy):
    """The worked example of README's "Extending galpipe", as written there."""
    import copy
    from dataclasses import dataclass

    from galpipe.adaptation import adapt_batch_norm
    from galpipe.experiment.strategies import FineTuning, Strategy

    @dataclass(frozen=True)
    class AdaBNHead(Strategy):
        uses_unlabelled_target: bool = True
        needs_batch_norm: bool = True
        learning_rate: float = 1e-3

        def config(self, base):
            return FineTuning(learning_rate=self.learning_rate, trainable="head").config(base)

        def train(self, run: StrategyRun):
            model = adapt_batch_norm(copy.deepcopy(run.pretrained), run.adaptation.x, run.adaptation.unlabelled_rows)
            history = train_classifier(model, run.x, run.train.row, run.train.label, run.validation.row,
                                       run.validation.label, run.config, run.checkpoint_path)
            return model, history, {}

    registry = Registry("fine-tuning strategy")  # a registry of its own: the shared one stays as it is
    registry.register("adabn_head", AdaBNHead())
    strategy = registry.get("adabn_head")
    config = strategy.config(TrainConfig(**TOY))
    assert config.training_mode == "head_only" and config.learning_rate == 1e-3
    model, history, _ = strategy.train(StrategyRun(toy["model"], toy["x"], toy["train"], toy["validation"], config,
                                                   "compact", adaptation=toy["data"]))
    assert history and np.isfinite(predict_proba(model, toy["x"])).all()
    frozen = {k: v for k, v in model.features.state_dict().items() if "running" not in k and "num_batches" not in k}
    for name, value in frozen.items():  # the features did not train
        np.testing.assert_array_equal(value.numpy(), toy["model"].features.state_dict()[name].numpy())
    assert any(not torch.equal(value, toy["model"].head.state_dict()[name])  # the head did
               for name, value in model.head.state_dict().items())
