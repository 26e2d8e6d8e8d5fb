"""Metrics of a binary classifier as the paper reports them (accuracy; completeness and purity
of each class; ROC AUC), their mean and spread over seeds, and the learning-curve plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from galpipe.experiment.strategies import DIRECT, adaptation_strategies  # noqa: E402
from galpipe.files import atomic_write  # noqa: E402
from galpipe.statistics import N_BOOTSTRAP, accuracy, bootstrap_interval, mcnemar, paired_bootstrap, pr_auc  # noqa: E402

PAPER_DIRECT_ACCURACY = 0.90  # Dominguez Sanchez et al. 2019, SDSS model applied to DES
PAPER_FINETUNED_ACCURACY = 0.95  # after training on 300-500 DES labels
METRICS = ["accuracy", "completeness_1", "purity_1", "completeness_0", "purity_0", "roc_auc"]


def binary_metrics(y_true, probability, threshold: float = 0.5) -> dict[str, float]:
    from sklearn.metrics import confusion_matrix, roc_auc_score  # here: 1 s to import, for each run process

    y_true = np.asarray(y_true).astype(int)
    predicted = (np.asarray(probability) >= threshold).astype(int)
    (tn, fp), (fn, tp) = confusion_matrix(y_true, predicted, labels=[0, 1])
    ratio = lambda a, b: float(a / b) if b else float("nan")  # noqa: E731
    return {
        "accuracy": ratio(tp + tn, len(y_true)),
        "completeness_1": ratio(tp, tp + fn), "purity_1": ratio(tp, tp + fp),
        "completeness_0": ratio(tn, tn + fp), "purity_0": ratio(tn, tn + fn),
        "roc_auc": float(roc_auc_score(y_true, probability)) if len(set(y_true)) == 2 else float("nan"),
        "n": int(len(y_true)),
    }


def regressions(metrics: dict[str, float], accepted: dict[str, float], tolerance: float) -> list[str]:
    """The metrics that fell more than `tolerance` below their accepted value. A metric that is
    not finite (ROC AUC of a one-class test set) cannot be compared and is left out."""
    return [f"{name} {value:.3f} is more than {tolerance} below the accepted {accepted[name]:.3f}"
            for name, value in metrics.items()
            if name in accepted and np.isfinite(value) and value < accepted[name] - tolerance]


def raised_baseline(metrics: dict[str, float], accepted: dict[str, float]) -> dict[str, float]:
    """Accepted values after a passing evaluation: the best so far of each metric, never lower, so
    a slow decline within the tolerance at each step still fails once it adds up."""
    raised = dict(accepted)
    for name, value in metrics.items():
        if np.isfinite(value):
            raised[name] = max(value, accepted.get(name, -np.inf))
    return raised


def with_selection(results: pd.DataFrame) -> pd.DataFrame:
    """Results of runs from before label selection existed were chosen at random."""
    results = results.copy()
    if "selection" not in results:
        results["selection"] = np.nan
    results["selection"] = results.selection.fillna(results.strategy.map(lambda s: "none" if s == DIRECT else "random"))
    return results


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per task x budget x strategy x selection."""
    grouped = with_selection(results).groupby(["task", "label_budget", "strategy", "selection"], sort=True)
    summary = grouped[METRICS].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary["n_seeds"] = grouped.size()
    return summary.reset_index()


def curve_name(strategy: str, selection: str) -> str:
    """A strategy x selection as the learning curves and the goals name it: random (the paper's
    choice) and none (budget 0) go unsaid."""
    return strategy if selection in ("random", "none") else f"{strategy} ({selection})"


def _line(row) -> str:
    return f"{curve_name(row.strategy, row.selection)} N={row.label_budget}"


def adaptation_goals(summary: pd.DataFrame, reference_budget: int = 500, few_labels: int = 50,
                     min_completeness: float = 0.5, comparisons: pd.DataFrame | None = None,
                     significance: float = 0.05, results: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per task, the goals of the adaptation strategies (issue 6) read off the evaluation table:

    - unsupervised: the best strategy at budget 0 against the source model applied directly: with
      `comparisons` (paired_comparisons), better with the paired bootstrap's p < `significance` on
      the same galaxies (the galaxies resampled with all their seeds: McNemar's p, also reported,
      counts each seed's pairs as independent); without, by more than the seed spread (the largest
      standard deviation over seeds of any budget-0 row: deterministic AdaBN has none of its own);
    - few labels: the best strategy x selection at 1..`few_labels` labels against `full` (random)
      at `reference_budget` (or the largest budget below it that ran), in mean accuracy;
    - the minority class (class 1): completeness and purity of each of those.
    With `results` (the runs, with their per-galaxy predictions), each verdict comes with the paired
    accuracy difference on the same test galaxies and its 95% bootstrap interval
    (`*_difference`, `*_low`, `*_high`); the few-labels goal is then met when the interval does
    not lie wholly below zero, i.e. the data cannot tell the few labels from the reference.
    "Best" is the highest mean test accuracy among the rows that find at least `min_completeness`
    of the minority class (with 6% barred galaxies, a model that calls nearly every galaxy
    unbarred scores 0.94 on accuracy alone); chosen on the test set itself, it is an optimistic
    reading of each goal. Empty when no adaptation strategy ran."""
    summary = with_selection(summary)
    runs_by_row = dict(tuple(with_selection(results).groupby(GROUP))) \
        if results is not None and has_predictions(results) else {}  # each summary row's runs, with predictions
    rows = []
    for task, runs in summary.groupby("task", sort=True):
        adapting = runs.strategy.isin(adaptation_strategies())
        if not adapting.any():
            continue
        direct = runs[runs.strategy == DIRECT]
        finds_minority = runs.completeness_1_mean >= min_completeness
        unsupervised = runs[(runs.label_budget == 0) & adapting & finds_minority]
        few = runs[runs.label_budget.between(1, few_labels) & finds_minority]
        full = runs[(runs.strategy == "full") & (runs.selection == "random") & (runs.label_budget > few_labels)
                    & (runs.label_budget <= reference_budget)]
        if direct.empty or unsupervised.empty or few.empty or full.empty:
            continue
        direct = direct.iloc[0]
        best_unsupervised = unsupervised.loc[unsupervised.accuracy_mean.idxmax()]
        best_few = few.loc[few.accuracy_mean.idxmax()]
        reference = full.loc[full.label_budget.idxmax()]
        spread = float(np.nan_to_num(runs[runs.label_budget == 0].accuracy_std.max()))
        margin = best_unsupervised.accuracy_mean - direct.accuracy_mean
        paired = comparisons[(comparisons.task == task) & (comparisons.label_budget == 0)
                             & (comparisons.strategy == best_unsupervised.strategy)] \
            if comparisons is not None and len(comparisons) else pd.DataFrame()
        p_value = float(paired.mcnemar_p.iloc[0]) if len(paired) else np.nan
        bootstrap_p = float(paired.accuracy_p.iloc[0]) if len(paired) else np.nan
        # The sign from the same seeds the test paired (the summary's means may hold seeds the other lacks).
        paired_margin = float(paired.accuracy.iloc[0] - paired.accuracy_against.iloc[0]) if len(paired) else margin
        met = paired_margin > 0 and bootstrap_p < significance if len(paired) else margin > spread
        intervals = {}
        for name, a, b in (("unsupervised", best_unsupervised, direct), ("few_labels", best_few, reference)):
            rows_a, rows_b = (runs_by_row.get((task, *(line[k] for k in GROUP[1:]))) for line in (a, b))
            if rows_a is not None and rows_b is not None:
                paired = paired_accuracy_difference(rows_a, rows_b)
                if paired is not None:
                    intervals |= {f"{name}_{key}": value for key, value in paired.items()}
        few_met = intervals["few_labels_high"] >= 0 if "few_labels_high" in intervals \
            else best_few.accuracy_mean >= reference.accuracy_mean
        rows.append({
            "task": task, "direct_accuracy": direct.accuracy_mean,
            "best_unsupervised": _line(best_unsupervised), "best_unsupervised_accuracy": best_unsupervised.accuracy_mean,
            "unsupervised_margin": margin, "budget0_seed_spread": spread, "unsupervised_p": bootstrap_p,
            "unsupervised_mcnemar_p": p_value,
            "unsupervised_goal_met": met,
            "reference": _line(reference), "reference_accuracy": reference.accuracy_mean,
            "best_few_labels": _line(best_few), "best_few_labels_accuracy": best_few.accuracy_mean,
            "few_labels_shortfall": reference.accuracy_mean - best_few.accuracy_mean,
            "few_labels_goal_met": few_met, **intervals,
            **{f"{name}_{metric}": row[f"{metric}_mean"]
               for name, row in (("direct", direct), ("best_unsupervised", best_unsupervised),
                                 ("best_few_labels", best_few), ("reference", reference))
               for metric in ("completeness_1", "purity_1")},
        })
    return pd.DataFrame(rows)


def save_figure(fig, out_path) -> Path:
    """Lay out, write the PNG atomically (a reader never sees half a file) and free the figure."""
    fig.tight_layout()
    # bbox "tight": captions under the last row of axes (the galleries') are not cut off.
    atomic_write(Path(out_path), lambda tmp: fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight"))
    plt.close(fig)
    return Path(out_path)


def plot_confusion(y_true, probability, out_path: Path, title: str) -> Path:
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(np.asarray(y_true).astype(int), (np.asarray(probability) >= 0.5).astype(int),
                              labels=[0, 1])
    fig, ax = plt.subplots(figsize=(3.2, 3))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center")
    ax.set(xticks=[0, 1], yticks=[0, 1], xlabel="predicted", ylabel="label", title=title)
    return save_figure(fig, out_path)


CURVE_METRICS = {"accuracy": "accuracy", "completeness_1": "completeness of class 1 (the minority)",
                 "purity_1": "purity of class 1 (the minority)"}


def plot_learning_curves(summary: pd.DataFrame, out_path: Path, metrics=tuple(CURVE_METRICS)) -> Path:
    """Each metric against label budget, one line per strategy x label selection (budget 0, where
    nothing was selected, joins the random line), one column per task; the paper's ~90% (applied
    directly) and >95% (fine-tuned on 300-500 labels) marked on accuracy; where the summary has
    them (with_intervals), each line's seed ensemble as crosses."""
    summary = summary.copy()
    summary["line"] = [curve_name(s, sel) for s, sel in
                       zip(summary.strategy, summary.get("selection", pd.Series("random", summary.index)))]
    tasks = sorted(summary.task.unique())
    fig, axes = plt.subplots(len(metrics), len(tasks), figsize=(4.6 * len(tasks), 3.3 * len(metrics)),
                             squeeze=False)
    # one colour per strategy, one line style per label selection
    colours = {strategy: f"C{k % 10}" for k, strategy in enumerate(sorted(summary.strategy.unique()))}
    dashes = {"uncertainty": "--", "diversity": ":"}
    styles = {line: (colours[strategy], dashes.get(selection, "-"))
              for line, strategy, selection in zip(summary.line, summary.strategy, summary.get("selection", "random"))}
    for row, metric in enumerate(metrics):
        for ax, task in zip(axes[row], tasks):
            rows = summary[summary.task == task]
            budgets = sorted(rows.label_budget.unique())
            positions = {b: k for k, b in enumerate(budgets)}
            for line_name, line in rows.groupby("line"):
                line = line.sort_values("label_budget")
                colour, dash = styles[line_name]
                ax.errorbar([positions[b] for b in line.label_budget], line[f"{metric}_mean"],
                            yerr=line[f"{metric}_std"].fillna(0), marker="o", ms=3, capsize=2, color=colour,
                            ls=dash, label=line_name)
                if f"seed_ensemble_{metric}" in line:
                    ax.plot([positions[b] for b in line.label_budget], line[f"seed_ensemble_{metric}"], marker="x",
                            ms=5, ls="none", color=colour)
            if f"seed_ensemble_{metric}" in rows:
                ax.plot([], [], marker="x", ls="none", color="black", label="seed ensemble (x)")
            if metric == "accuracy":
                ax.axhline(PAPER_DIRECT_ACCURACY, color="grey", ls=":", label="paper: applied directly")
                ax.axhline(PAPER_FINETUNED_ACCURACY, color="grey", ls="-.", label="paper: 300-500 labels")
            ax.set_xticks(range(len(budgets)), [str(b) for b in budgets])
            low, high = ax.get_ylim()  # a fraction: error bars of a model flipping between seeds stay in [0, 1]
            ax.set_ylim(max(low, -0.02), min(high, 1.02))
            ax.set(title=task if row == 0 else "", xlabel="target labels (budget)", ylabel=CURVE_METRICS.get(metric, metric))
    axes[0, -1].legend(fontsize=6, loc="lower right")
    return save_figure(fig, out_path)


def plot_roc_curves(curves: dict[str, tuple], out_path: Path, title: str) -> Path:
    """ROC curves, one per entry {name: (y_true, probability)}, with their AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4, 3.8))
    for name, (y_true, probability) in curves.items():
        if len(set(np.asarray(y_true).tolist())) < 2:
            continue  # a ROC curve needs both classes
        fpr, tpr, _ = roc_curve(y_true, probability)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y_true, probability):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate (completeness)", title=title)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, out_path)


# Per-galaxy test predictions each fine-tuning row carries (galpipe.experiment.protocol.per_galaxy_predictions).
PREDICTION_COLUMNS = ("test_object_ids", "test_labels", "test_probabilities")
GROUP = ["task", "label_budget", "strategy", "selection"]


def aligned_predictions(rows: pd.DataFrame, ids=None) -> tuple[list, np.ndarray, np.ndarray]:
    """(object ids, labels, probabilities by row) on the test galaxies every row (and `ids`, if
    given) was evaluated on, in one order: rows of partitions materialized at other times may
    have been tested on more or fewer galaxies."""
    rows = rows.sort_values("seed") if "seed" in rows else rows  # seed k beside seed k of another strategy
    common = set.intersection(*(set(r) for r in rows.test_object_ids), *([set(ids)] if ids is not None else []))
    order = sorted(common)
    probabilities, labels = [], None
    for row in rows.itertuples():
        by_id = dict(zip(row.test_object_ids, zip(row.test_labels, row.test_probabilities)))
        labels = np.array([by_id[i][0] for i in order]) if labels is None else labels
        probabilities.append([by_id[i][1] for i in order])
    return order, labels, np.array(probabilities, dtype=float)


def has_predictions(results: pd.DataFrame) -> bool:
    return all(c in results for c in PREDICTION_COLUMNS) and results.test_object_ids.notna().all()


def with_intervals(summary: pd.DataFrame, results: pd.DataFrame, truth: dict | None = None,
                   n_bootstrap: int = N_BOOTSTRAP) -> pd.DataFrame:
    """`summary` with, per row, 95% bootstrap intervals over the test galaxies of the seed-mean
    accuracy and ROC AUC (`*_low`, `*_high`), the mean PR AUC, the accuracy and ROC AUC of the
    seeds' mean probability (`seed_ensemble_*`: how the row's seeds score averaged into one
    model, as a champion is served), and where `truth` (task -> object_id -> 0/1, the
    simulation's) is given the mean accuracy against the truth."""
    if not has_predictions(results):
        return summary
    extra = []
    for key, rows in with_selection(results).groupby(GROUP, sort=True):
        ids, y, p = aligned_predictions(rows)
        row = dict(zip(GROUP, key))
        for metric in ("accuracy", "roc_auc"):
            row[f"{metric}_low"], row[f"{metric}_high"] = bootstrap_interval(y, p, metric, n_bootstrap)
        row["pr_auc_mean"] = float(np.mean([pr_auc(y, q) for q in p]))
        ensemble = binary_metrics(y, p.mean(axis=0))
        row["seed_ensemble_accuracy"], row["seed_ensemble_roc_auc"] = ensemble["accuracy"], ensemble["roc_auc"]
        if truth and key[0] in truth:
            known = truth[key[0]].reindex(ids)
            mask = known.notna().to_numpy()
            truth_labels = known[mask].to_numpy()
            row["accuracy_truth_mean"] = float(np.mean([accuracy(truth_labels, q[mask]) for q in p])) \
                if mask.any() else np.nan
        extra.append(row)
    return summary.merge(pd.DataFrame(extra), on=GROUP, how="left")


def paired_comparisons(results: pd.DataFrame, n_bootstrap: int = N_BOOTSTRAP) -> pd.DataFrame:
    """Each trained strategy against the model applied directly, and `full` against each other
    strategy at the same budget and selection, on the same test galaxies and seeds: the accuracy
    and ROC AUC differences with their paired-bootstrap intervals and p values (galaxies resampled,
    each with all its seeds), and McNemar's exact test of accuracy (seeds' pairs pooled, so
    optimistic with several seeds)."""
    if not has_predictions(results):
        return pd.DataFrame()
    runs = with_selection(results)
    comparisons = []
    for task, task_runs in runs.groupby("task"):
        direct = task_runs[task_runs.strategy == DIRECT]
        groups = {key: rows for key, rows in task_runs.groupby(["label_budget", "strategy", "selection"])}
        for (budget, strategy, selection), rows in groups.items():
            if strategy == DIRECT:
                continue
            opponents = [(DIRECT, 0, direct)] if len(direct) else []
            if strategy == "full":
                opponents += [(other, budget, r) for (b, other, sel), r in groups.items()
                              if b == budget and sel == selection and other not in ("full", DIRECT)]
            for name, other_budget, other in opponents:
                pair = paired_predictions(rows, other)
                if pair is None:
                    continue
                y, p_a, p_b = pair
                test = mcnemar(y, p_a, p_b)
                difference = paired_bootstrap(y, p_a, p_b, "accuracy", n_bootstrap)
                auc = paired_bootstrap(y, p_a, p_b, "roc_auc", n_bootstrap)
                comparisons.append({"task": task, "label_budget": budget, "selection": selection, "strategy": strategy,
                                    "against": f"{name} N={other_budget}", "n_galaxies": len(y),
                                    "accuracy": float(np.mean([accuracy(y, q) for q in p_a])),
                                    "accuracy_against": float(np.mean([accuracy(y, q) for q in p_b])),
                                    "accuracy_difference_low": difference["low"],
                                    "accuracy_difference_high": difference["high"], "accuracy_p": difference["p_value"],
                                    "mcnemar_p": test["p_value"], "roc_auc_difference": auc["difference"],
                                    "roc_auc_difference_low": auc["low"], "roc_auc_difference_high": auc["high"],
                                    "roc_auc_p": auc["p_value"]})
    return pd.DataFrame(comparisons)


def paired_accuracy_difference(rows: pd.DataFrame, other: pd.DataFrame) -> dict | None:
    """Accuracy of `rows` minus `other` on the same test galaxies and seeds (paired_predictions):
    difference, low and high (its paired-bootstrap interval) and McNemar's p (mcnemar_p); None when
    they share no seed."""
    pair = paired_predictions(rows, other)
    if pair is None:
        return None
    difference = paired_bootstrap(*pair, "accuracy")
    return {"difference": difference["difference"], "low": difference["low"], "high": difference["high"],
            "mcnemar_p": mcnemar(*pair)["p_value"]}


def paired_predictions(rows: pd.DataFrame, other: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(labels, probabilities of `rows` by seed, of `other` by seed) on the test galaxies both were
    evaluated on, seed k beside seed k (one model applied directly beside every seed); None when
    they share no seed (partitions run under other project seeds)."""
    if len(other) > 1:
        both = set(rows.seed) & set(other.seed)
        if not both:
            return None
        rows, other = rows[rows.seed.isin(both)], other[other.seed.isin(both)]
    ids, y, p_a = aligned_predictions(rows, set.intersection(*(set(r) for r in other.test_object_ids)))
    _, _, p_b = aligned_predictions(other, ids)
    return y, p_a, np.repeat(p_b, len(p_a), axis=0) if len(p_b) == 1 else p_b
