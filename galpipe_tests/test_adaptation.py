"""Learning from unlabelled target images and choosing which galaxies to label, on the shifted
toy surveys of test_models_training: each adaptation strategy brings the target's embeddings
closer to the source's without losing the source, and uncertainty sampling asks for the
galaxies nearest the decision boundary."""

import copy

import numpy as np
import pytest
import torch

from galpipe.adaptation import (
    AdaptationData,
    Consistency,
    StackedArrays,
    adapt_batch_norm,
    contrastive_loss,
    contrastive_pretrained,
    coral_loss,
    domain_distance,
    embeddings,
    erased,
    fixmatch_loss,
    pseudo_labels,
    weak_view,
)
from galpipe.evaluation import adaptation_goals, binary_metrics
from galpipe.experiment.selections import select_for_labelling
from galpipe.experiment.strategies import STRATEGIES, StrategyRun
from galpipe.models import build_model
from galpipe.training import Step, TrainConfig, predict_proba, train_classifier
from galpipe.transfer import LabelledSample
from galpipe_tests.test_models_training import _toy_survey, straight_and_resumed

SOURCE_TRAIN, SOURCE_VALIDATION = np.arange(340), np.arange(340, 400)
# No augmentation on the toy: its zoomed-out images get zero borders unlike its noisy sky, and the
# validation loss then jumps about (0.5 to 4.7 between epochs), whatever the method. fp32, so that
# the thresholds below meet the same numbers on every CPU (auto trains in bf16 where it is native).
TOY_TRAINING = {"patience": 4, "batch_size": 32, "seed": 0, "device": "cpu", "augment": False, "precision": "fp32"}
TARGET_UNLABELLED, TARGET_TEST = np.arange(200), np.arange(200, 300)


def _sample(rows, labels):
    return LabelledSample(np.array([f"g{r}" for r in rows]), np.asarray(rows), np.asarray(labels)[rows])


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(3)
    x_source, y_source = _toy_survey(400, rng)
    x_target, y_target = _toy_survey(300, rng, shifted=True)
    model = build_model("compact", seed=0)
    train_classifier(model, x_source, SOURCE_TRAIN, y_source[SOURCE_TRAIN], SOURCE_VALIDATION,
                     y_source[SOURCE_VALIDATION], TrainConfig(**TOY_TRAINING, max_epochs=12, learning_rate=1e-3))
    data = AdaptationData.build(x_target, x_source, _sample(SOURCE_TRAIN, y_source),
                                _sample(SOURCE_VALIDATION, y_source), TARGET_UNLABELLED)
    return {"model": model, "data": data, "x_source": x_source, "y_source": y_source, "x_target": x_target,
            "y_target": y_target}


def _distance(source_model, target_model, toy):
    """Source validation images through `source_model`, target test images through `target_model`."""
    return domain_distance(embeddings(source_model, toy["x_source"], SOURCE_VALIDATION),
                           embeddings(target_model, toy["x_target"], TARGET_TEST))


def _source_accuracy(model, toy):
    return binary_metrics(toy["y_source"][SOURCE_VALIDATION],
                          predict_proba(model, toy["x_source"][SOURCE_VALIDATION]))["accuracy"]


def test_stacked_arrays_read_rows_across_both_arrays():
    a, b = np.arange(12.0).reshape(3, 4), 100 + np.arange(8.0).reshape(2, 4)
    stacked = StackedArrays(a, b)
    assert len(stacked) == 5 and stacked.offset(1) == 3
    np.testing.assert_array_equal(stacked[np.array([0, 2, 2, 3, 4])], np.stack([a[0], a[2], a[2], b[0], b[1]]))


def test_the_coral_loss_is_computed_in_fp32_under_bf16_autocast():
    generator = torch.Generator().manual_seed(0)
    source, target = torch.randn(64, 32, generator=generator), 1.05 * torch.randn(64, 32, generator=generator)
    exact = coral_loss(source, target)
    with torch.autocast("cpu", torch.bfloat16):  # as CoralAlignment.loss calls it when training in bf16
        under_autocast = coral_loss(source.bfloat16(), target.bfloat16())
    assert under_autocast.dtype == torch.float32
    # Only the inputs' rounding to bf16 remains; autocast no longer computes the covariances in bf16.
    assert under_autocast.item() == pytest.approx(coral_loss(source.bfloat16(), target.bfloat16()).item(), rel=1e-6)
    assert under_autocast.item() == pytest.approx(exact.item(), rel=0.05)


def test_adabn_moves_only_the_normalisation_and_shrinks_the_domain_distance(toy):
    before = _distance(toy["model"], toy["model"], toy)
    adapted = adapt_batch_norm(copy.deepcopy(toy["model"]), toy["x_target"], TARGET_UNLABELLED)
    after = _distance(toy["model"], adapted, toy)  # each survey through its own statistics
    assert after < 0.5 * before
    weights = lambda m: {k: v for k, v in m.state_dict().items() if "running" not in k and "num_batches" not in k}  # noqa: E731
    for name, value in weights(adapted).items():
        np.testing.assert_array_equal(value.numpy(), weights(toy["model"])[name].numpy())
    with pytest.raises(ValueError, match="no batch normalisation"):
        adapt_batch_norm(build_model("ds18"), toy["x_target"], TARGET_UNLABELLED[:4])


def _source_view(model, toy):
    """The model as it sees the source: self-training's model normalises with the target's batch
    statistics (its teacher is AdaBN's), so the source gets its own, as in AdaBN."""
    return adapt_batch_norm(copy.deepcopy(model), toy["x_source"], SOURCE_TRAIN)


@pytest.mark.parametrize("strategy", ["coral", "self_training"])
def test_unsupervised_strategies_align_the_surveys_and_keep_the_source(toy, strategy):
    config = TrainConfig(**TOY_TRAINING, max_epochs=4, learning_rate=3e-4)
    strategy_config = STRATEGIES.get(strategy).config(config)
    adapted, history, extra = STRATEGIES.get(strategy).train(StrategyRun(
        toy["model"], toy["x_target"], None, None, strategy_config, "compact", adaptation=toy["data"]))
    assert history and extra["n_unlabelled_target"] == len(TARGET_UNLABELLED)
    source_side = _source_view(adapted, toy) if strategy == "self_training" else adapted
    before, after = _distance(toy["model"], toy["model"], toy), _distance(source_side, adapted, toy)
    assert after < 0.5 * before  # measured: 45 -> 1.2 (coral)
    assert _source_accuracy(source_side, toy) >= _source_accuracy(toy["model"], toy) - 0.1


def test_self_training_from_scratch_learns_from_its_scratch_teacher_and_the_unlabelled_galaxies(toy):
    """The teacher is a network trained from scratch on a few target labels (the source is not
    used); the student starts from it and adds the unlabelled galaxies the teacher is surest of."""
    labelled, validation = np.arange(0, 40), np.arange(40, 60)
    y = toy["y_target"]
    config = TrainConfig(**TOY_TRAINING, max_epochs=8, learning_rate=1e-3)
    teacher = build_model("compact", seed=1)
    train_classifier(teacher, toy["x_target"], labelled, y[labelled], validation, y[validation], config)
    strategy = STRATEGIES.get("self_training_scratch")
    assert strategy.teacher == "scratch" and not strategy.runs_without_labels
    student, history, extra = strategy.train(StrategyRun(
        toy["model"], toy["x_target"], _sample(labelled, y), _sample(validation, y), strategy.config(config),
        "compact", adaptation=toy["data"], teacher=teacher))
    assert history and extra["teacher"] == "scratch"
    # The pseudo-labels are this teacher's, on the 140 unlabelled galaxies it was not given.
    candidates = np.setdiff1d(TARGET_UNLABELLED, np.concatenate([labelled, validation]))
    chosen, pseudo = pseudo_labels(predict_proba(teacher, toy["x_target"][candidates]))
    assert extra["n_pseudo_labels"] == len(chosen) and extra["pseudo_label_positive_fraction"] == round(float(pseudo.mean()), 4)
    accuracy = lambda m: binary_metrics(y[TARGET_TEST], predict_proba(m, toy["x_target"][TARGET_TEST]))["accuracy"]  # noqa: E731
    assert accuracy(student) >= accuracy(teacher) + 0.1  # measured: 0.61 -> 0.84 (fp32)


def test_pseudo_labels_keep_the_teachers_class_balance():
    probability = np.array([0.95, 0.9, 0.6, 0.45, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01])  # expects 4 positives
    index, labels = pseudo_labels(probability, keep_fraction=0.5)
    assert dict(zip(index.tolist(), labels.tolist())) == {0: 1, 1: 1, 9: 0, 8: 0, 7: 0}
    index, labels = pseudo_labels(np.full(20, 0.2))  # nothing above 0.5: still both classes
    assert set(labels) == {0, 1}


def test_uncertainty_sampling_asks_for_the_galaxies_nearest_the_boundary():
    rng = np.random.default_rng(0)
    n = 200
    labels = (rng.random(n) < 0.3).astype(int)
    probability = rng.random(n)
    pool = LabelledSample(np.array([f"g{i}" for i in range(n)]), np.arange(n), labels)
    chosen = select_for_labelling(pool, 20, 0, "uncertainty", probability)
    margin = np.abs(probability - 0.5)
    assert set(np.unique(chosen.label)) == {0, 1}
    assert np.max(margin[chosen.row]) <= np.sort(margin)[25]  # the 20 nearest (one may be swapped for a class)
    assert np.median(margin[chosen.row]) < 0.25 * np.median(margin)


def test_diversity_spreads_the_labels_over_the_uncertain_galaxies():
    rng = np.random.default_rng(1)
    cluster = np.repeat([0, 1, 2, 3], [12, 100, 100, 100])  # four kinds of galaxy, in embedding space
    n = len(cluster)
    points = np.eye(4)[cluster] * 10 + rng.normal(0, 0.1, (n, 4))
    margin = np.array([0.001, 0.01, 0.1, 0.2])[cluster] + rng.uniform(0, 0.001, n)  # kind 0: most ambiguous
    probability = 0.5 + margin * rng.choice([-1, 1], n)
    pool = LabelledSample(np.array([f"g{i}" for i in range(n)]), np.arange(n), (rng.random(n) < 0.5).astype(int))
    uncertain = select_for_labelling(pool, 8, 0, "uncertainty", probability)
    diverse = select_for_labelling(pool, 8, 0, "diversity", probability, points)
    assert set(cluster[uncertain.row]) == {0}  # eight near-copies of the one ambiguous kind
    assert set(cluster[diverse.row]) == {0, 1}  # both kinds among the 4N = 32 most uncertain
    assert np.all(margin[diverse.row] <= 0.011)  # and still only uncertain galaxies
    assert select_for_labelling(pool, 8, 0, "diversity", probability, points).object_id.tolist() == \
        diverse.object_id.tolist()  # the same seed, the same galaxies


def _summary_row(budget, strategy, selection, accuracy, std=np.nan, completeness=0.8, purity=0.6):
    return {"task": "bar", "label_budget": budget, "strategy": strategy, "selection": selection,
            "accuracy_mean": accuracy, "accuracy_std": std, "completeness_1_mean": completeness,
            "purity_1_mean": purity}


def test_the_goals_compare_the_best_adaptation_with_direct_and_with_full_at_500():
    import pandas as pd

    summary = pd.DataFrame([
        _summary_row(0, "direct", "none", 0.80, completeness=0.9, purity=0.2),
        _summary_row(0, "adabn", "none", 0.83),  # deterministic: one seed, no spread of its own
        _summary_row(0, "coral", "none", 0.82, std=0.04),
        _summary_row(25, "scratch", "random", 0.95, completeness=0.0, purity=np.nan),  # calls nothing barred
        _summary_row(25, "head_only", "random", 0.94, completeness=0.3, purity=0.7),  # finds too few bars
        _summary_row(50, "self_training", "uncertainty", 0.88, std=0.01, completeness=0.7, purity=0.5),
        _summary_row(300, "full", "random", 0.87, std=0.01),
        _summary_row(500, "full", "random", 0.90, std=0.01, completeness=0.85, purity=0.55),
        _summary_row(1000, "full", "random", 0.93, std=0.01),
    ])
    (goals,) = adaptation_goals(summary).to_dict("records")
    assert goals["best_unsupervised"] == "adabn N=0" and goals["unsupervised_margin"] == pytest.approx(0.03)
    assert goals["budget0_seed_spread"] == 0.04 and not goals["unsupervised_goal_met"]  # 0.03 is within it
    assert goals["best_few_labels"] == "self_training (uncertainty) N=50"  # not those missing most bars
    assert goals["reference"] == "full N=500" and goals["few_labels_shortfall"] == pytest.approx(0.02)
    assert not goals["few_labels_goal_met"]
    assert (goals["best_few_labels_completeness_1"], goals["reference_purity_1"]) == (0.7, 0.55)
    # without a run at 500 the reference is the largest budget below it; without adaptation, no goals
    assert adaptation_goals(summary[summary.label_budget != 500]).reference.item() == "full N=300"
    assert adaptation_goals(summary[~summary.strategy.isin(["adabn", "coral", "self_training"])]).empty


def test_contrastive_pretraining_learns_to_pair_views_and_is_computed_once_per_start():
    from galpipe_tests.test_models_training import _toy_survey

    # The loss is the cross-entropy of finding each view's partner: low when the pairs match.
    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    assert contrastive_loss(z, z, 0.1) < 0.1 < np.log(31) < contrastive_loss(z, z.roll(1, 0), 0.1)
    x, _ = _toy_survey(96, np.random.default_rng(4))
    config = TrainConfig(seed=0, device="cpu", precision="fp32", learning_rate=3e-3)
    start = build_model("compact", seed=0)
    model, history = contrastive_pretrained(start, x, np.arange(96), config, epochs=15, batch_size=32)
    assert history[-1]["contrastive_loss"] < 0.9 * history[0]["contrastive_loss"]  # measured 4.21 -> 3.26
    assert not torch.equal(model.features[0].weight, start.features[0].weight)  # a copy was trained
    torch.testing.assert_close(model.head[-1].weight, start.head[-1].weight)  # the classifier untouched
    again, same_history = contrastive_pretrained(start, x, np.arange(96), config, epochs=15, batch_size=32)
    assert same_history is history and torch.equal(again.features[0].weight, model.features[0].weight)


def _constant_network(logit: float) -> torch.nn.Module:
    """A real network whose every image gets `logit`, whatever the augmentation did to it."""
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 1), torch.nn.Flatten(0))
    torch.nn.init.zeros_(network[1].weight)
    torch.nn.init.constant_(network[1].bias, logit)
    return network


@pytest.mark.parametrize(("logit", "threshold", "weight", "unlabelled_term"), [
    (0.0, 0.95, 1.0, 0.0),  # p = 0.5 on every weak view: sure of none, so no unlabelled term
    (2.0, 0.95, 1.0, 0.0),  # p = 0.88: not sure enough
    (2.0, 0.85, 1.0, float(torch.nn.functional.softplus(torch.tensor(-2.0)))),  # sure at 0.85
    (4.0, 0.95, 1.0, float(torch.nn.functional.softplus(torch.tensor(-4.0)))),  # sure of class 1: -log p(1) of the strong view
    (-4.0, 0.95, 0.5, 0.5 * float(torch.nn.functional.softplus(torch.tensor(-4.0)))),  # sure of class 0, weighted
])
def test_fixmatch_learns_from_the_unlabelled_views_it_is_sure_of_with_their_own_class(logit, threshold, weight,
                                                                                    unlabelled_term):
    """The loss is the labelled cross-entropy plus `weight` x, averaged over the unlabelled images,
    the strong view's cross-entropy against the weak view's class where the weak view is sure. A
    pseudo-label of the wrong sign would add about |logit| instead of softplus(-|logit|)."""
    x = np.random.default_rng(0).normal(size=(40, 3, 8, 8)).astype(np.float32)
    x[4:10] = np.nan  # neither labelled nor unlabelled: drawn, they would make the loss NaN
    objective = Consistency(np.arange(10, 40), threshold=threshold, weight=weight, unlabelled_per_step=16)
    step = Step(x, np.random.default_rng(1), torch.Generator().manual_seed(1), "cpu", "fp32", True, torch.tensor(1.0),
                "galaxy")
    target = torch.tensor([1.0, 0.0, 1.0, 1.0])
    network = _constant_network(logit)
    labelled = torch.nn.functional.binary_cross_entropy_with_logits(torch.full((4,), logit), target)
    loss = objective.loss(network, torch.from_numpy(x[:4]), target, step)
    assert loss.item() == pytest.approx(labelled.item() + unlabelled_term, rel=1e-5, abs=1e-7)
    assert objective.params() == {"consistency": "fixmatch", "consistency_threshold": threshold,
                                  "consistency_weight": weight, "unlabelled_per_step": 16}


def test_fixmatch_refuses_a_threshold_that_is_no_confidence_and_an_empty_unlabelled_set():
    with pytest.raises(ValueError, match=r"threshold 0.3: give a confidence in \[0.5, 1\)"):
        Consistency(np.arange(5), threshold=0.3)
    with pytest.raises(ValueError, match="needs unlabelled rows"):
        Consistency(np.arange(0))


def test_the_unlabelled_term_averages_the_sure_views_loss_over_every_image():
    weak = torch.tensor([5.0, -5.0, 0.1, -0.2])  # sure of 1, sure of 0, unsure, unsure
    strong = torch.tensor([1.0, 2.0, 3.0, -4.0])
    softplus = torch.nn.functional.softplus
    expected = (softplus(torch.tensor(-1.0)) + softplus(torch.tensor(2.0))) / 4  # -log p(1) at 1, -log p(0) at 2
    assert fixmatch_loss(weak, strong, 0.95).item() == pytest.approx(expected.item(), rel=1e-6)
    # Positives weighted like the labelled term's: only the pseudo-positive image's term doubles.
    expected_weighted = (2 * softplus(torch.tensor(-1.0)) + softplus(torch.tensor(2.0))) / 4
    assert fixmatch_loss(weak, strong, 0.95, torch.tensor(2.0)).item() == pytest.approx(expected_weighted.item(), rel=1e-6)


def test_the_weak_view_is_one_of_the_eight_turns_and_flips_each_drawn_per_image():
    images = torch.randn(64, 3, 9, 9)
    out = weak_view(images, torch.Generator().manual_seed(0))
    drawn = []
    for image, view in zip(images, out):
        candidates = [torch.rot90(image, k, dims=(1, 2)) for k in range(4)]
        candidates += [c.flip(2) for c in candidates]
        [match] = [k for k, c in enumerate(candidates) if torch.equal(c, view)]  # exactly one, pixels untouched
        drawn.append(match)
    assert len(set(drawn)) == 8


def test_erasing_sets_one_square_of_up_to_half_the_side_to_zero():
    images = torch.ones(400, 3, 20, 20)
    out = erased(images, torch.Generator().manual_seed(0))
    zero = out[:, 0] == 0
    assert torch.equal(zero, (out == 0).all(dim=1))  # every band alike
    rows, columns = zero.any(dim=2).sum(dim=1), zero.any(dim=1).sum(dim=1)
    assert torch.equal(zero.sum(dim=(1, 2)), rows * columns)  # one axis-aligned rectangle (a square clipped at an edge)
    inner = ~(zero[:, 0].any(1) | zero[:, -1].any(1) | zero[:, :, 0].any(1) | zero[:, :, -1].any(1))
    # Away from the edges, a square: its centre falls between pixels, so its sides on the grid differ by at most one.
    assert inner.sum() > 100 and (rows[inner] - columns[inner]).abs().max() <= 1
    assert rows.max() <= 10 and columns.max() <= 10 and (rows >= 8).any()  # sides drawn up to half the image's
    assert ((out == 1) | (out == 0)).all() and (zero.sum(dim=(1, 2)) > 0).float().mean() > 0.8


def test_fixmatch_leaves_the_labelled_and_validation_galaxies_out_of_its_unlabelled_images(toy):
    labelled, validation = np.arange(0, 20), np.arange(20, 30)
    y = toy["y_target"]
    strategy = STRATEGIES.get("fixmatch")
    config = TrainConfig(**TOY_TRAINING, max_epochs=1, learning_rate=1e-3)
    _, history, extra = strategy.train(StrategyRun(toy["model"], toy["x_target"], _sample(labelled, y),
                                                   _sample(validation, y), strategy.config(config), "compact",
                                                   adaptation=toy["data"]))
    assert len(history) == 1 and extra["n_unlabelled_target"] == len(TARGET_UNLABELLED)
    assert extra["n_unlabelled_used"] == len(TARGET_UNLABELLED) - 30
    assert extra["fixmatch_start"] == "scratch" and STRATEGIES.get("fixmatch_simulation").from_scratch is False


def test_fixmatch_training_resumes_from_its_checkpoint_with_the_same_unlabelled_draws(tmp_path):
    """The objective's draws come from the run's generators, which the checkpoint keeps."""
    config = TrainConfig(max_epochs=3, patience=5, batch_size=32, seed=2, device="cpu", precision="fp32")
    straight_and_resumed(tmp_path, config, lambda: Consistency(np.arange(60, 80), threshold=0.6, unlabelled_per_step=8),
                         labelled=60)
