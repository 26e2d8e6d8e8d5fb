"""Architectures, the training loop and the transfer protocol on toy data small enough for CI."""

import dataclasses

import numpy as np
import pytest
import torch

from galpipe import training
from galpipe.evaluation import binary_metrics
from galpipe.experiment.protocol import pretraining_config, train_config
from galpipe.models import DS18, build_model, count_flops, count_parameters
from galpipe.project import load_project
from galpipe.training import (
    SCHEDULES,
    TrainConfig,
    TrainingError,
    augment_batch,
    evaluate_loss,
    predict_proba,
    set_training_mode,
    survey_randomised,
    train_classifier,
)
from galpipe.transfer import BudgetError, LabelledSample, choose_budget, split_train_validation


def test_image_batches_give_the_rows_asked_for_in_any_order():
    """Consecutive rows of an array in memory are sliced rather than copied; duplicated, unsorted
    and gapped rows (and memory-mapped arrays) are gathered: each batch holds exactly x[rows]."""
    for shape in ((10, 3, 2, 2), (10, 1, 2, 2), (10, 3, 1, 1)):  # the last two: NCHW is channels_last already
        x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
        for rows in ([2, 3, 4, 5], [3, 3, 5], [5, 1, 2, 9], list(range(10)), [-3, -2, -1]):
            got = np.zeros((len(rows), *shape[1:]), np.float32)
            for positions, images in training.image_batches(x, rows, batch_size=3):
                got[positions] = images.numpy()
            np.testing.assert_array_equal(got, x[rows])
        with pytest.raises(IndexError):  # rows past the end are an error, not a short batch
            list(training.image_batches(x, [9, 10]))
        before = x.copy()
        [(_, images)] = training.image_batches(x, [0, 1], batch_size=8)
        images += 1  # the batch is a copy: the array it came from is untouched
        np.testing.assert_array_equal(x, before)


def test_ds18_is_the_published_network():
    model = DS18()
    assert model(torch.zeros(5, 3, 69, 69)).shape == (5,)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (6, 6)), (64, (5, 5)), (128, (2, 2)), (128, (3, 3))]
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.5, 0.25, 0.25, 0.25, 0.5]
    # 3*6*6*32+32 + 32*5*5*64+64 + 64*2*2*128+128 + 128*3*3*128+128 + 128*17*17*64+64 + 64+1
    assert count_parameters(model) == 2_602_849
    assert count_flops(model) == pytest.approx(0.68e9, rel=0.02)  # DESIGN.md: ~0.68 GFLOP per image


def test_compact_default_is_far_cheaper():
    compact = build_model("compact")
    assert compact(torch.zeros(2, 3, 69, 69)).shape == (2,)
    assert count_flops(compact) * 20 < count_flops(DS18())
    with pytest.raises(KeyError, match="resnet"):
        build_model("resnet")


def test_head_only_freezes_the_features():
    model = build_model("compact")
    set_training_mode(model, "head_only")
    assert not any(p.requires_grad for p in model.features.parameters())
    assert all(p.requires_grad for p in model.head.parameters())


def _toy_survey(n, rng, shifted=False):
    """Class 1: an elongated blob, class 0: a round one, random orientation and size. The
    shifted survey sees the same sky with twice the contrast, a sky offset and less noise."""
    yy, xx = np.mgrid[-34:35, -34:35].astype(np.float32)
    labels = rng.integers(0, 2, n)
    images = np.empty((n, 3, 69, 69), np.float32)
    for k, label in enumerate(labels):
        angle, size = rng.uniform(0, np.pi), rng.uniform(4, 8)
        q = 0.35 if label else 1.0
        u = xx * np.cos(angle) + yy * np.sin(angle)
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        blob = np.exp(-0.5 * ((u / size) ** 2 + (v / (q * size)) ** 2))
        noise = rng.normal(0, 0.1 if shifted else 0.3, (3, 69, 69))
        images[k] = (2.0 * blob + 0.8 if shifted else blob) + noise
    return images, labels


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_same_seed_same_model_and_metrics(precision):
    x, y = _toy_survey(120, np.random.default_rng(0))
    results = []
    for global_seed in (123, 456):
        torch.manual_seed(global_seed)  # the global random state must not matter
        model = build_model("compact", seed=5)
        config = TrainConfig(max_epochs=2, batch_size=32, seed=5, device="cpu", precision=precision)
        history = train_classifier(model, x, np.arange(100), y[:100], np.arange(100, 120), y[100:], config)
        losses = [(r["epoch"], r["train_loss"], r["val_loss"]) for r in history]  # not the seconds
        results.append((losses, predict_proba(model, x[100:])))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_interrupted_training_resumes_from_its_checkpoint(tmp_path, schedule, precision):
    config = TrainConfig(max_epochs=3, patience=5, batch_size=32, seed=2, device="cpu", schedule=schedule,
                         precision=precision)
    straight_and_resumed(tmp_path, config)


def straight_and_resumed(tmp_path, config: TrainConfig, objective=lambda: None, labelled: int = 80) -> None:
    """A run straight through, and the same run stopped after its first epoch and resumed from its
    checkpoint into a network of other weights: the same losses, epoch by epoch. `objective` makes
    a fresh Objective for each (None: cross-entropy); rows from `labelled` to 79 are left unlabelled."""
    x, y = _toy_survey(100, np.random.default_rng(1))
    args = (x, np.arange(labelled), y[:labelled], np.arange(80, 100), y[80:])
    straight = train_classifier(build_model("compact", seed=0), *args, config, objective=objective())

    def stop_after_first(record):
        if record["epoch"] == 0:
            raise KeyboardInterrupt

    checkpoint = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        train_classifier(build_model("compact", seed=0), *args, config, checkpoint, on_epoch=stop_after_first,
                         checkpoint_every_s=0, objective=objective())
    assert checkpoint.is_file()
    # The weights come from the checkpoint.
    resumed = train_classifier(build_model("compact", seed=99), *args, config, checkpoint, objective=objective())
    assert [r["epoch"] for r in resumed] == [0, 1, 2]
    losses = lambda history: [(r["train_loss"], r["val_loss"]) for r in history]  # noqa: E731
    np.testing.assert_allclose(losses(resumed), losses(straight), rtol=1e-5)
    assert not checkpoint.exists()


def test_checkpoints_are_written_at_most_every_checkpoint_every_s(tmp_path, monkeypatch):
    """By default a run shorter than CHECKPOINT_EVERY_SECONDS writes none (a fine-tuning run of a
    few labels would spend a sixth of its time saving them); a longer one writes them that often."""
    x, y = _toy_survey(100, np.random.default_rng(1))
    args = (x, np.arange(80), y[:80], np.arange(80, 100), y[80:])
    config = TrainConfig(max_epochs=4, patience=5, batch_size=32, seed=2, device="cpu", precision="fp32")
    saved_after = []
    monkeypatch.setattr(training, "_save_checkpoint", lambda path, model, o, s, history, *rest: saved_after.append(
        history[-1]["epoch"]))
    train_classifier(build_model("compact", seed=0), *args, config, tmp_path / "run.pt")
    assert saved_after == []  # a run of well under 30 s: no checkpoint at all
    train_classifier(build_model("compact", seed=0), *args, config, tmp_path / "run.pt", checkpoint_every_s=0)
    assert saved_after == [0, 1, 2, 3]

    class TenSecondsPerReading:  # training.py's clock, read at the start, at each epoch's start and end, after each save
        def __init__(self):
            self.now = -10

        def perf_counter(self):
            self.now += 10
            return self.now

    saved_after.clear()
    monkeypatch.setattr(training, "time", TenSecondsPerReading())
    train_classifier(build_model("compact", seed=0), *args, config, tmp_path / "run.pt", checkpoint_every_s=45)
    assert saved_after == [1, 3]  # epoch 0 ends 30 s in; epoch 1 60 s (saved, 70 s); epoch 2 100 s; epoch 3 130 s


def test_a_checkpoint_of_other_galaxies_is_not_resumed(tmp_path):
    x, y = _toy_survey(100, np.random.default_rng(1))
    config = TrainConfig(max_epochs=2, patience=5, batch_size=32, seed=2, device="cpu")

    def stop_after_first(record):
        raise KeyboardInterrupt

    checkpoint = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        train_classifier(build_model("compact", seed=0), x, np.arange(80), y[:80], np.arange(80, 100), y[80:],
                         config, checkpoint, on_epoch=stop_after_first, checkpoint_every_s=0)
    fewer = (x, np.arange(60), y[:60], np.arange(80, 100), y[80:])  # new labels changed the training set
    with pytest.warns(UserWarning, match="different training set or config; starting afresh"):
        history = train_classifier(build_model("compact", seed=0), *fewer, config, checkpoint)
    straight = train_classifier(build_model("compact", seed=0), *fewer, config)
    assert [r["train_loss"] for r in history] == pytest.approx([r["train_loss"] for r in straight], rel=1e-5)
    # The same rows and labels, other pixels (the project now frames its galaxies differently).
    with pytest.raises(KeyboardInterrupt):
        train_classifier(build_model("compact", seed=0), *fewer, config, checkpoint, on_epoch=stop_after_first,
                         checkpoint_every_s=0)
    with pytest.warns(UserWarning, match="different training set or config; starting afresh"):
        train_classifier(build_model("compact", seed=0), x[:, :, ::-1].copy(), *fewer[1:], config, checkpoint)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # both numeric paths, on any CPU
def test_a_one_cycle_schedule_runs_to_its_end_and_keeps_the_best_weights(precision):
    x, y = _toy_survey(100, np.random.default_rng(3))
    args = (x, np.arange(80), y[:80], np.arange(80, 100), y[80:])
    settings = {"max_epochs": 8, "patience": 1, "batch_size": 32, "seed": 0, "device": "cpu", "precision": precision}
    constant = train_classifier(build_model("compact", seed=0), *args, TrainConfig(**settings))
    model = build_model("compact", seed=0)
    one_cycle = train_classifier(model, *args, TrainConfig(**settings, schedule="one_cycle", learning_rate=3e-3))
    assert len(one_cycle) == 8 > len(constant)  # patience 1 stopped the constant rate early
    best = min(r["val_loss"] for r in one_cycle)
    assert evaluate_loss(model, x[80:], y[80:], 32, "cpu") == pytest.approx(best, rel=1e-5)


def _bar_image(n: int) -> torch.Tensor:
    """A horizontal bar in three bands (1, 2 and 3 times as bright), n copies."""
    image = torch.zeros(3, 69, 69)
    image[:, 32:37, 14:55] = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1)
    return image.expand(n, 3, 69, 69).clone()


def _bar_angles_deg(images: torch.Tensor) -> np.ndarray:
    """The bar's orientation in each image, 0-90 deg from horizontal, from its second moments."""
    yy, xx = torch.meshgrid(torch.arange(69.0), torch.arange(69.0), indexing="ij")
    w = images.sum(1).clamp(min=0)
    total = w.sum((1, 2))
    mx, my = (w * xx).sum((1, 2)) / total, (w * yy).sum((1, 2)) / total
    dx, dy = xx - mx.view(-1, 1, 1), yy - my.view(-1, 1, 1)
    cxx, cyy, cxy = ((w * d).sum((1, 2)) / total for d in (dx * dx, dy * dy, dx * dy))
    return np.degrees(np.abs(0.5 * np.arctan2(2 * cxy, cxx - cyy)).numpy())


def test_galaxy_augmentation_turns_galaxies_any_way_and_jitters_bands_and_noise():
    images = _bar_image(400)
    affine = augment_batch(images, torch.Generator().manual_seed(0), "affine")
    galaxy = augment_batch(images, torch.Generator().manual_seed(0), "galaxy")
    assert _bar_angles_deg(affine).max() < 46  # +-45 deg, flips keep a bar's axis
    assert (_bar_angles_deg(galaxy) > 60).mean() > 0.2  # any angle: a third of them beyond 60 deg
    ratios = lambda x: (x[:, 1].sum((1, 2)) / x[:, 0].sum((1, 2))).numpy()  # noqa: E731  band 2 / band 1
    np.testing.assert_allclose(ratios(affine), 2.0, rtol=1e-4)  # affine keeps the colours
    assert 0.05 < ratios(galaxy).std() / 2 < 0.15 and 1.5 < ratios(galaxy).min() and ratios(galaxy).max() < 2.5
    assert (galaxy[:, :, :5, :5] != 0).any() and not (affine[:, :, :5, :5] != 0).any()  # noise in the empty corner
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment_batch(images, torch.Generator(), "mirror")


def test_survey_augmentation_blurs_stretches_recolours_and_adds_noise_per_image():
    point = torch.zeros(400, 3, 69, 69)
    point[:, :, 34, 34] = torch.tensor([1.0, 2.0, 3.0])
    survey = survey_randomised(point, torch.Generator().manual_seed(0))
    near = survey[:, :, 31:38, 31:38]  # +-3 px: the point's light, little of the noise
    kept = near[:, :, 3, 3] / near.sum((2, 3))  # the point's share of it after blurring, per band
    assert kept[:, 0].max() > 0.5 and kept[:, 0].min() < 0.1  # sigma from 0 (the point stays) to 1.5 px
    assert (kept.max(1).values - kept.min(1).values).max() < 0.3  # one blur for all of an image's bands (0.96 if not)
    assert (survey[:, :, :5, :5] != 0).any(1).any(1).any(1).float().mean() > 0.9  # noise in the empty corner
    steps = torch.full((400, 3, 69, 69), 1.0)
    steps[..., :34] = 0.25  # two flat halves, 0.25 and 1
    stepped = survey_randomised(steps, torch.Generator().manual_seed(1))
    powers = torch.log(stepped[:, 0, 20:49, 5:25].mean((1, 2)) / stepped[:, 0, 20:49, 44:64].mean((1, 2))) / np.log(0.25)
    assert 0.55 < powers.min() < 0.7 and 1.45 < powers.max() < 1.65  # the stretch's power, 0.6-1.6
    gains = stepped[:, 2, 20:49, 44:64].mean((1, 2)) / stepped[:, 0, 20:49, 44:64].mean((1, 2))  # 1 ** p = 1
    assert gains.min() < 0.6 and gains.max() > 1.7  # band gains apart (1/1.5 to 1.5 each), not only 0.9-1.1
    moved = augment_batch(_bar_image(400), torch.Generator().manual_seed(0), "survey")
    assert (_bar_angles_deg(moved) > 60).mean() > 0.2  # and turned any way, as "galaxy"


def test_the_pretraining_takes_its_own_augmentation_and_fine_tuning_the_profiles():
    profile = dataclasses.replace(load_project("tiny").profile, augmentation="galaxy", pretraining_augmentation="survey")
    assert pretraining_config(profile, "featured", seed=1).augmentation == "survey"
    assert pretraining_config(profile, "featured", seed=1).max_epochs == profile.pretrain_max_epochs
    assert train_config(profile, "featured", seed=1).augmentation == "galaxy"
    plain = dataclasses.replace(profile, pretraining_augmentation="")
    assert pretraining_config(plain, "featured", seed=1).augmentation == "galaxy"  # "" : the profile's own


def test_nan_loss_and_single_class_are_clear_errors():
    x, y = _toy_survey(40, np.random.default_rng(2))
    x[3] = np.nan
    config = TrainConfig(max_epochs=1, batch_size=40, device="cpu", augment=False)
    with pytest.raises(TrainingError, match="loss became nan at epoch 0"):
        train_classifier(build_model("compact"), x, np.arange(30), y[:30], np.arange(30, 40), y[30:], config)
    with pytest.raises(TrainingError, match="single class"):
        train_classifier(build_model("compact"), x, np.arange(30), np.zeros(30), np.arange(30, 40), y[30:], config)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # both numeric paths, on any CPU
def test_fine_tuning_on_a_shifted_toy_survey_beats_applying_directly(precision):
    rng = np.random.default_rng(3)
    x_source, y_source = _toy_survey(400, rng)
    x_target, y_target = _toy_survey(300, rng, shifted=True)
    model = build_model("compact", seed=0)
    train_classifier(model, x_source, np.arange(340), y_source[:340], np.arange(340, 400), y_source[340:],
                     TrainConfig(max_epochs=12, patience=4, batch_size=32, seed=0, device="cpu", precision=precision))
    source_accuracy = binary_metrics(y_source[340:], predict_proba(model, x_source[340:]))["accuracy"]
    test = np.arange(100, 300)
    direct = binary_metrics(y_target[test], predict_proba(model, x_target[test]))["accuracy"]
    train_classifier(model, x_target, np.arange(80), y_target[:80], np.arange(80, 100), y_target[80:100],
                     TrainConfig(max_epochs=6, patience=3, batch_size=32, seed=0, device="cpu", min_steps=40,
                                 precision=precision))
    finetuned = binary_metrics(y_target[test], predict_proba(model, x_target[test]))["accuracy"]
    assert source_accuracy > 0.75  # measured 0.78-0.85 over init seeds 0-2
    assert direct < source_accuracy - 0.1  # the shift hurts
    assert finetuned > direct + 0.3  # 100 target labels recover it (measured 0.93-0.99 from 0.49)


def test_budget_selection_is_fixed_per_seed_and_bounded_by_the_pool():
    labels = np.array([0] * 95 + [1] * 5)
    pool = LabelledSample(np.array([f"g{i}" for i in range(100)]), np.arange(100), labels)
    a, b = choose_budget(pool, 10, seed=4), choose_budget(pool, 10, seed=4)
    assert list(a.object_id) == list(b.object_id) and len(a) == 10
    assert list(choose_budget(pool, 10, seed=5).object_id) != list(a.object_id)
    for seed in range(20):  # rare class always represented, even in tiny budgets
        assert set(choose_budget(pool, 3, seed).label) == {0, 1}
    with pytest.raises(BudgetError, match="label budget 101 exceeds the labelled pool of 100"):
        choose_budget(pool, 101, seed=0)
    train, validation = split_train_validation(choose_budget(pool, 25, 0), seed=0)
    assert len(train) + len(validation) == 25 and set(train.label) == {0, 1}
    assert not set(train.object_id) & set(validation.object_id)


def test_metrics_match_a_hand_counted_confusion_matrix():
    y = [1, 1, 1, 0, 0, 0, 0, 0]
    p = [0.9, 0.8, 0.2, 0.7, 0.1, 0.1, 0.3, 0.4]  # tp=2 fn=1 fp=1 tn=4
    m = binary_metrics(y, p)
    assert m["accuracy"] == 6 / 8
    assert (m["completeness_1"], m["purity_1"]) == (2 / 3, 2 / 3)
    assert (m["completeness_0"], m["purity_0"]) == (4 / 5, 4 / 5)
    assert m["roc_auc"] == pytest.approx(12 / 15)  # of 15 (positive, negative) pairs, 12 ranked right


def test_the_regression_baseline_only_rises_so_a_slow_decline_fails():
    from galpipe.evaluation import raised_baseline, regressions

    accepted = {"accuracy": 0.90}
    for accuracy in (0.89, 0.88):  # each step within the 0.02 tolerance of the best accepted value
        assert regressions({"accuracy": accuracy}, accepted, 0.02) == []
        accepted = raised_baseline({"accuracy": accuracy}, accepted)
    assert accepted == {"accuracy": 0.90}
    assert regressions({"accuracy": 0.87}, accepted, 0.02) == ["accuracy 0.870 is more than 0.02 below the accepted 0.900"]
    assert raised_baseline({"accuracy": 0.95, "roc_auc": float("nan")}, accepted) == {"accuracy": 0.95}
    assert regressions({"roc_auc": float("nan")}, {"roc_auc": 0.9}, 0.02) == []  # cannot compare


def test_positives_are_weighted_by_the_negatives_per_positive_when_balanced():
    from galpipe.training import positive_weight

    labels = np.array([1, 0, 0, 0, 0, 0, 0, 0])
    assert positive_weight(labels, "balanced") == 7.0 and positive_weight(labels, "none") == 1.0
    with pytest.raises(ValueError, match="unknown class_weighting 'sqrt'"):
        positive_weight(labels, "sqrt")


def test_the_champion_is_chosen_on_validation_loss_never_on_test_accuracy():
    import pandas as pd

    from galpipe.experiment.protocol import choose_champion

    runs = pd.DataFrame([
        # the best test accuracy of all, but fewer labels: not eligible
        {"label_budget": 100, "strategy": "full", "seed": 0, "val_loss": 0.10, "accuracy": 0.99},
        # head_only has the single lowest validation loss, full the lower mean over seeds
        {"label_budget": 300, "strategy": "head_only", "seed": 0, "val_loss": 0.20, "accuracy": 0.97},
        {"label_budget": 300, "strategy": "head_only", "seed": 1, "val_loss": 0.60, "accuracy": 0.96},
        {"label_budget": 300, "strategy": "full", "seed": 0, "val_loss": 0.30, "accuracy": 0.80},
        {"label_budget": 300, "strategy": "full", "seed": 1, "val_loss": 0.25, "accuracy": 0.81},
    ])
    chosen = choose_champion(runs)
    assert (chosen.strategy, chosen.seed) == ("full", 1)


def test_a_seed_ensemble_predicts_its_members_mean_probability_and_is_saved_as_it_is(tmp_path):
    """Mean of the members' probabilities, also where they round to 0 and 1 (the logit stays
    finite), the same after batch norm is folded and after saving and loading; members of two
    architectures are refused."""
    from galpipe.hardware import inference_model
    from galpipe.models import SeedEnsemble, load_model_files, save_model_files

    members = [build_model("compact", seed=seed).eval() for seed in range(3)]
    with torch.no_grad():  # one member sure of class 1, one of class 0: their mean is about a third
        members[0].head[-1].bias.fill_(60.0)
        members[1].head[-1].bias.fill_(-60.0)
    ensemble = SeedEnsemble.of(members)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(8, 3, 69, 69)).astype(np.float32))
    with torch.no_grad():
        mean = torch.stack([torch.sigmoid(m(x)) for m in members]).mean(0)
        assert torch.isfinite(ensemble(x)).all()
        torch.testing.assert_close(torch.sigmoid(ensemble(x)), mean, atol=1e-6, rtol=0)
        torch.testing.assert_close(torch.sigmoid(inference_model(ensemble, "cpu")(x)), mean, atol=1e-5, rtol=0)
        loaded = load_model_files(*save_model_files(ensemble, tmp_path))
        assert isinstance(loaded, SeedEnsemble) and len(loaded.members) == 3
        torch.testing.assert_close(loaded(x), ensemble(x), atol=0, rtol=0)
    with torch.no_grad():  # every member sure of class 1: a logit of the mean probability would be infinite
        for member in members:
            member.head[-1].bias.fill_(60.0)
        certain = SeedEnsemble.of(members)(x)
    assert torch.isfinite(certain).all() and (certain > 50).all()
    with pytest.raises(ValueError, match="share one architecture and its arguments"):
        SeedEnsemble.of([members[0], build_model("compact", width=8)])
    with pytest.raises(ValueError, match="not ensembles"):
        SeedEnsemble.of([ensemble, members[0]])


def test_strategy_learning_rates_scale_with_the_projects_and_are_exact_at_the_default():
    from galpipe.experiment.strategies import STRATEGIES

    full, scratch = STRATEGIES.get("full"), STRATEGIES.get("scratch")
    assert full.config(TrainConfig()).learning_rate == 3e-4 and scratch.config(TrainConfig()).learning_rate == 1e-3
    assert full.config(TrainConfig(learning_rate=3e-3)).learning_rate == pytest.approx(9e-4)
    assert scratch.config(TrainConfig(learning_rate=3e-3)).learning_rate == pytest.approx(3e-3)
