"""How sure the evaluation table's numbers are, over the test galaxies: bootstrap confidence
intervals of a metric averaged over seeds, and paired comparisons of two strategies on the same
galaxies (a paired bootstrap for accuracy and ROC AUC, resampling galaxies with all their seeds;
McNemar's exact test for accuracy, optimistic when seeds are pooled). Plain numpy/scipy
functions of labels and probabilities, so they can be checked on predictions with known answers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

N_BOOTSTRAP = 1000  # resamples: all at once, a few tenths of a second for 2,000 galaxies
LEVEL = 0.95


def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(((p >= 0.5) == y).mean())


def pr_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the precision-recall curve (average precision): for a rare class, what ROC AUC hides."""
    from sklearn.metrics import average_precision_score  # here: sklearn and scipy take 1.5 s to import

    return float(average_precision_score(y, p)) if y.sum() > 0 else float("nan")


def _accuracy_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Accuracy of each row of (resamples, galaxies) labels and probabilities."""
    return ((p >= 0.5) == y).mean(axis=1)


def _roc_auc_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """ROC AUC of each row (Mann-Whitney: ties count half), all rows at once; NaN where a row has one class."""
    from scipy.stats import rankdata

    ranks = rankdata(p, axis=1)
    n_positive = y.sum(axis=1)
    n_negative = y.shape[1] - n_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * y).sum(axis=1) - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative)
    return np.where((n_positive > 0) & (n_negative > 0), auc, np.nan)


ROW_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {"accuracy": _accuracy_rows,
                                                                          "roc_auc": _roc_auc_rows}


def _resamples(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, n]).integers(0, n, size=(n_bootstrap, n))


def _seed_mean(y: np.ndarray, p_by_seed: np.ndarray, idx: np.ndarray, metric: str) -> np.ndarray:
    """`metric` on each resample (rows of `idx`), averaged over the seeds (rows of `p_by_seed`)."""
    return np.mean([ROW_METRICS[metric](y[idx], p[idx]) for p in np.atleast_2d(p_by_seed)], axis=0)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def bootstrap_interval(y: np.ndarray, p_by_seed: np.ndarray, metric: str, n_bootstrap: int = N_BOOTSTRAP,
                       seed: int = 0, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of `metric` (accuracy or roc_auc) averaged over seeds (rows of
    `p_by_seed`), the test galaxies resampled with replacement (the same galaxies for every seed,
    as they share the test set)."""
    return _percentiles(_seed_mean(y, p_by_seed, _resamples(len(y), n_bootstrap, seed), metric), level)


def mcnemar(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray) -> dict:
    """McNemar's exact test of equal accuracy on the same galaxies: only the galaxies one model gets
    right and the other wrong count. p_a, p_b may stack seeds (the pairs of each seed pooled): the
    seeds then count as independent pairs, which on the same galaxies they are not, so p is
    optimistic; `paired_bootstrap(..., "accuracy")` resamples galaxies with their seeds together."""
    from scipy.stats import binomtest

    right_a = (np.atleast_2d(p_a) >= 0.5) == y
    right_b = (np.atleast_2d(p_b) >= 0.5) == y
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    p_value = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_a_right": only_a, "only_b_right": only_b, "p_value": float(p_value)}


def paired_bootstrap(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, metric: str = "roc_auc",
                     n_bootstrap: int = N_BOOTSTRAP, seed: int = 0, level: float = LEVEL) -> dict:
    """The difference a - b of `metric` (averaged over seeds) with its percentile interval, both
    models scored on the same resampled galaxies; p_value: twice the share of resamples on the
    other side of zero (two-sided)."""
    everything = np.arange(len(y))[None]
    observed = float(_seed_mean(y, p_a, everything, metric)[0] - _seed_mean(y, p_b, everything, metric)[0])
    idx = _resamples(len(y), n_bootstrap, seed)
    values = _seed_mean(y, p_a, idx, metric) - _seed_mean(y, p_b, idx, metric)
    values = values[np.isfinite(values)]
    low, high = _percentiles(values, level)
    p_value = min(1.0, 2 * min((values <= 0).mean(), (values >= 0).mean())) if len(values) else float("nan")
    return {"difference": observed, "low": low, "high": high, "p_value": float(p_value)}
