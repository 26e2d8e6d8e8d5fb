"""Results you can trust: no target test galaxy's counterpart is pretrained on, label budgets are
nested, and the intervals and paired tests recover known answers on synthetic predictions."""

import numpy as np
import pandas as pd
import pytest

from galpipe.evaluation import paired_comparisons, summarise, with_intervals
from galpipe.experiment.protocol import TransferData, per_galaxy_predictions
from galpipe.experiment.selections import SELECTIONS
from galpipe.preprocessing import ModelInputs
from galpipe.statistics import bootstrap_interval, mcnemar, paired_bootstrap
from galpipe.transfer import LabelledSample


def _transfer_data(include: bool) -> TransferData:
    source = pd.DataFrame({"object_id": [f"s{i}" for i in range(40)], "bar": [i % 2 for i in range(40)]})
    index = pd.DataFrame({"object_id": source.object_id, "row": range(40), "status": "ok", "reason": ""})
    matched = pd.DataFrame({"object_id": [f"t{i}" for i in range(12)],
                            "source_object_id": [f"s{i}" for i in range(10)] + [None, None],
                            "split": ["test"] * 6 + ["pool"] * 6})
    return TransferData(source, ModelInputs("unused.npy", index), matched, ModelInputs("unused.npy", index), include)


def test_pretraining_leaves_out_the_counterparts_of_the_target_test_galaxies():
    counterparts = {f"s{i}" for i in range(6)}  # of the six test galaxies; s6..s9 are pool counterparts
    train, validation = _transfer_data(include=False).source_sample("bar")
    used = set(train.object_id) | set(validation.object_id)
    assert not used & counterparts and len(used) == 40 - 6 and {"s6", "s9"} <= used
    train, validation = _transfer_data(include=True).source_sample("bar")  # the option puts them back
    assert counterparts <= set(train.object_id) | set(validation.object_id)


@pytest.mark.parametrize("selection", SELECTIONS.names())
def test_label_budgets_are_nested_for_every_selection(selection):
    rng = np.random.default_rng(3)
    pool = LabelledSample(np.array([f"g{i}" for i in range(300)]), np.arange(300), (rng.random(300) < 0.2).astype(int))
    probability, embeddings = rng.random(300), rng.normal(size=(300, 8))
    for seed in (0, 1):
        chosen = [set(SELECTIONS.get(selection).select(pool, n, seed, probability, embeddings).object_id)
                  for n in (10, 25, 50, 100, 300)]
        assert [len(c) for c in chosen] == [10, 25, 50, 100, 300]
        assert all(small <= large for small, large in zip(chosen, chosen[1:])), selection


def _predictions(n: int, right_fraction: float, seed: int):
    """Labels and probabilities that are right for a known share of the galaxies."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    right = rng.random(n) < right_fraction
    return y, np.where(right, y, 1 - y) * 0.6 + 0.2 + rng.normal(0, 0.05, n)


def _right(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Probabilities for labels `y` that are right for `fraction` of the galaxies."""
    right = np.random.default_rng([seed, 9]).random(len(y)) < fraction
    return np.where(right, y, 1 - y) * 0.6 + 0.2


def test_intervals_and_paired_tests_recover_known_answers():
    y, p_good = _predictions(3000, 0.9, seed=0)
    p_worse = _right(y, 0.8, seed=1)
    low, high = bootstrap_interval(y, p_good, "accuracy", n_bootstrap=400)
    observed = ((p_good >= 0.5) == y).mean()
    assert low < observed < high
    assert high - low == pytest.approx(2 * 1.96 * np.sqrt(observed * (1 - observed) / 3000), rel=0.25)
    assert mcnemar(y, p_good, p_worse)["p_value"] < 1e-10  # 90% against 80% right on 3,000 galaxies
    assert mcnemar(y, p_good, p_good)["p_value"] == 1.0
    same = paired_bootstrap(y, p_good, p_good, "roc_auc", n_bootstrap=200)
    assert same["difference"] == 0 and same["low"] <= 0 <= same["high"]
    noise = np.random.default_rng(2).random(3000)  # no skill: ROC AUC 0.5
    better = paired_bootstrap(y, p_good, noise, "roc_auc", n_bootstrap=200)
    assert better["low"] > 0.3 and better["p_value"] < 0.01


def _runs(strategy, budget, seed, y, p):
    ids = [f"g{i}" for i in range(len(y))]
    return {"task": "bar", "label_budget": budget, "strategy": strategy, "selection": "random" if budget else "none",
            "seed": seed, "accuracy": ((p >= 0.5) == y).mean(), "roc_auc": 0.5, "completeness_1": 0.5,
            "purity_1": 0.5, "completeness_0": 0.5, "purity_0": 0.5, "test_object_ids": ids,
            "test_labels": y.tolist(), "test_probabilities": p.tolist()}


def test_stored_test_probabilities_keep_a_saturated_models_ranking():
    # float32 probabilities a few ulps below 1, as a confident model gives: rounded to 6 decimals three
    # of the four became 1.0, and the ROC AUC recomputed from the stored ones (intervals, paired tests)
    # was not the run's own.
    labels = np.array([0, 1, 0, 1, 1, 0])
    probability = np.array([1 - 6e-7, 1 - 1.2e-7, 1 - 4.8e-7, 1 - 2.4e-7, 0.3, 0.2], dtype=np.float32)
    test = LabelledSample(np.array([f"t{i}" for i in range(6)]), np.arange(6), labels)
    stored = np.array(per_galaxy_predictions(test, probability)["test_probabilities"])
    assert len(set(stored[:4])) == 4
    np.testing.assert_array_equal(stored, probability.astype(float))


def test_the_evaluation_table_carries_intervals_truth_and_paired_comparisons():
    y, p_direct = _predictions(800, 0.7, seed=0)
    rows = [_runs("direct", 0, 0, y, p_direct)]
    for seed in (0, 1):
        rows += [_runs("full", 100, seed, y, _right(y, 0.95, seed)),
                 _runs("scratch", 100, seed, y, np.full(800, 0.6))]
    results = pd.DataFrame(rows)
    truth = {"bar": pd.Series(y, index=[f"g{i}" for i in range(800)]).astype(float)}
    table = with_intervals(summarise(results), results, truth, n_bootstrap=100)
    full = table[table.strategy == "full"].iloc[0]
    assert full.accuracy_low < full.accuracy_mean < full.accuracy_high and full.accuracy_truth_mean == full.accuracy_mean
    comparisons = paired_comparisons(results, n_bootstrap=100)
    against = {(r.strategy, r.against): r for r in comparisons.itertuples()}
    assert against[("full", "direct N=0")].mcnemar_p < 1e-10
    assert against[("full", "scratch N=100")].roc_auc_difference > 0.3
    assert set(against) == {("full", "direct N=0"), ("scratch", "direct N=0"), ("full", "scratch N=100")}


@pytest.mark.parametrize("adabn_right, met", [(0.9, True), (0.72, False)])
def test_the_unsupervised_goal_is_judged_by_a_paired_test(adabn_right, met):
    """AdaBN at 90% right against the direct model's 70% on 800 galaxies is a real gain; at 72% it
    is a 2-point difference a paired test cannot tell from chance, whatever the seed spread."""
    from galpipe.evaluation import adaptation_goals

    y, p_direct = _predictions(800, 0.7, seed=0)
    rows = [_runs("direct", 0, 0, y, p_direct), _runs("adabn", 0, 0, y, _right(y, adabn_right, seed=5))]
    for seed in (0, 1):
        rows += [_runs("full", 25, seed, y, _right(y, 0.8, seed)), _runs("full", 300, seed, y, _right(y, 0.9, seed))]
    results = pd.DataFrame(rows)
    [goals] = adaptation_goals(summarise(results), comparisons=paired_comparisons(results, n_bootstrap=50)).to_dict("records")
    assert goals["best_unsupervised"] == "adabn N=0" and goals["unsupervised_margin"] > 0
    assert goals["unsupervised_goal_met"] is met and (goals["unsupervised_p"] < 0.05) is met
    assert (goals["unsupervised_mcnemar_p"] < 0.05) is met  # one seed: both tests agree


def test_seeds_of_one_model_are_not_counted_as_more_evidence():
    """Three seeds of AdaBN that are one and the same model (74% right against the direct model's
    70% on 800 galaxies): McNemar's test with the seeds' pairs pooled counts each galaxy three
    times and says p < 0.01; the paired bootstrap, which resamples galaxies with all their seeds,
    cannot tell the gain from chance, and the goal is not met."""
    from galpipe.evaluation import adaptation_goals

    y, p_direct = _predictions(800, 0.7, seed=0)
    adabn = _right(y, 0.74, seed=5)
    rows = [_runs("direct", 0, 0, y, p_direct)] + [_runs("adabn", 0, seed, y, adabn) for seed in (0, 1, 2)]
    for seed in (0, 1):
        rows += [_runs("full", 25, seed, y, _right(y, 0.8, seed)), _runs("full", 300, seed, y, _right(y, 0.9, seed))]
    results = pd.DataFrame(rows)
    comparisons = paired_comparisons(results, n_bootstrap=1000)
    [goals] = adaptation_goals(summarise(results), comparisons=comparisons).to_dict("records")
    assert goals["unsupervised_margin"] > 0 and goals["unsupervised_mcnemar_p"] < 0.01
    assert goals["unsupervised_p"] > 0.05 and not goals["unsupervised_goal_met"]
    [row] = comparisons[comparisons.strategy == "adabn"].itertuples()
    assert row.accuracy_difference_low < 0 < row.accuracy_difference_high


@pytest.mark.parametrize("few_right, met", [(0.9, True), (0.8, False)])
def test_the_few_labels_goal_comes_with_its_paired_interval(few_right, met):
    """N=25 as good as `full` at 300 (90% right each): the interval of the difference holds 0, so
    the goal is met; 10 points worse on 800 galaxies: the interval lies below 0, not met."""
    from galpipe.evaluation import adaptation_goals

    y, p_direct = _predictions(800, 0.7, seed=0)
    rows = [_runs("direct", 0, 0, y, p_direct), _runs("adabn", 0, 0, y, _right(y, 0.75, seed=5))]
    for seed in (0, 1):
        rows += [_runs("full", 25, seed, y, _right(y, few_right, seed + 10)),
                 _runs("full", 300, seed, y, _right(y, 0.9, seed))]
    results = pd.DataFrame(rows)
    [goals] = adaptation_goals(summarise(results), reference_budget=300, results=results,
                               comparisons=paired_comparisons(results, n_bootstrap=50)).to_dict("records")
    assert goals["best_few_labels"] == "full N=25" and goals["reference"] == "full N=300"
    assert goals["few_labels_low"] < goals["few_labels_difference"] < goals["few_labels_high"]
    assert goals["few_labels_difference"] == pytest.approx(goals["best_few_labels_accuracy"] - goals["reference_accuracy"])
    assert goals["few_labels_goal_met"] is met and (goals["few_labels_high"] >= 0) is met
    assert goals["unsupervised_low"] < goals["unsupervised_difference"] < goals["unsupervised_high"]


def test_each_seed_starts_from_its_own_pretraining_so_direct_and_adabn_have_a_spread(tmp_path):
    from galpipe_tests.conftest import galpipe_in, write_project

    project = write_project(tmp_path, "tiny", name="seeds", tasks=["featured"], seeds=[0, 1], label_budgets=[0, 25],
                            strategies=["full"], adaptation_strategies=["adabn"], adaptation_budgets=[0],
                            selections=["random"], selection_strategies=["full"])
    assert galpipe_in(tmp_path, ["run", "--config", project]) == 0
    table = pd.read_parquet(tmp_path / "data" / "seeds" / "evaluation_table.parquet")
    assert dict(zip(table.strategy, table.n_seeds)) == {"direct": 2, "adabn": 2, "full": 2}
    runs = pd.concat(pd.read_parquet(p) for p in (tmp_path / "data" / "seeds" / "finetuned_models").glob("*.parquet"))
    started_from = runs.groupby("seed").pretrained_model_uri.unique()
    assert all(len(uris) == 1 for uris in started_from) and started_from[0][0] != started_from[1][0]
