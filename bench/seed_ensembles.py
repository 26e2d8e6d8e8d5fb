"""What a seed ensemble (the seeds' models averaged: how a champion is served) gains over one
seed, from a finished run's folder: per task, budget and strategy, the mean accuracy of its seeds,
the accuracy of their mean probability, and the paired difference on the same test galaxies (95%
bootstrap interval over the galaxies). Nothing is trained: every run's per-galaxy test
probabilities are in its finetuned_models partition.

    .venv/bin/python bench/seed_ensembles.py data/small [more run folders] > table.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not part of the package

from galpipe.defs.io_managers import read_parquet  # noqa: E402
from galpipe.evaluation import GROUP, aligned_predictions, binary_metrics, with_selection  # noqa: E402
from galpipe.experiment.strategies import DIRECT  # noqa: E402
from galpipe.statistics import paired_bootstrap  # noqa: E402


def ensemble_gains(run_dir: Path) -> pd.DataFrame:
    """A row per task x budget x strategy x selection with two seeds or more."""
    runs = pd.concat([read_parquet(p) for p in sorted((run_dir / "finetuned_models").glob("*.parquet"))],
                     ignore_index=True)
    rows = []
    for key, seeds in with_selection(runs[runs.strategy != DIRECT]).groupby(GROUP, sort=True):
        if seeds.seed.nunique() < 2:
            continue
        _, labels, probabilities = aligned_predictions(seeds)
        ensemble = binary_metrics(labels, probabilities.mean(axis=0))
        gain = paired_bootstrap(labels, probabilities.mean(axis=0), probabilities, "accuracy")
        # The seed the champion rule served before the ensembles: the lowest validation loss (rows in seed order).
        by_seed = seeds.sort_values("seed").reset_index(drop=True)
        chosen = binary_metrics(labels, probabilities[by_seed.val_loss.idxmin()])["accuracy"] \
            if by_seed.val_loss.notna().any() else np.nan
        per_seed = [binary_metrics(labels, p) for p in probabilities]
        rows.append({**dict(zip(GROUP, key)), "n_seeds": len(seeds), "n_test": len(labels),
                     "seed_accuracy_mean": np.mean([m["accuracy"] for m in per_seed]),
                     "lowest_val_loss_seed_accuracy": chosen, "ensemble_accuracy": ensemble["accuracy"],
                     "gain": gain["difference"], "gain_low": gain["low"], "gain_high": gain["high"],
                     "seed_roc_auc_mean": np.mean([m["roc_auc"] for m in per_seed]),
                     "ensemble_roc_auc": ensemble["roc_auc"],
                     # a seed that calls every test galaxy one class (a `scratch` stuck at the majority)
                     "collapsed_seed": bool(any(len(np.unique(p >= 0.5)) == 1 for p in probabilities))})
    return pd.DataFrame(rows)


def _counts(difference: pd.Series) -> str:
    return (f"above in {(difference > 0).sum()}, tied in {(difference == 0).sum()}, below in {(difference < 0).sum()}; "
            f"median {difference.median():+.3f}, mean {difference.mean():+.3f}")


def markdown(run_dir: Path, gains: pd.DataFrame) -> str:
    # Rows with a seed that calls every galaxy one class (a collapsed `scratch`) tie or swing wildly: also counted apart.
    learnt = gains[~gains.collapsed_seed]
    lines = [f"`{run_dir}`: {len(gains)} task x budget x strategy rows. The ensemble's accuracy against its seeds' mean: "
             f"{_counts(gains.gain)}; against the seed of lowest validation loss (the champion rule's pick "
             f"before): {_counts(gains.ensemble_accuracy - gains.lowest_val_loss_seed_accuracy)}. The same over the "
             f"{len(learnt)} rows where no seed calls every galaxy one class: {_counts(learnt.gain)}; "
             f"{_counts(learnt.ensemble_accuracy - learnt.lowest_val_loss_seed_accuracy)}. ROC AUC median gain over "
             f"the seeds' mean {(gains.ensemble_roc_auc - gains.seed_roc_auc_mean).median():+.3f}.", "",
             "| task | N labels | strategy | seeds | accuracy: seeds' mean | seed of lowest validation loss | seed ensemble "
             "| gain over the mean [95%] | ROC AUC: seeds' mean, ensemble |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in gains.itertuples():
        strategy = r.strategy if r.selection == "random" else f"{r.strategy} ({r.selection})"
        lines.append(f"| {r.task} | {r.label_budget} | {strategy} | {r.n_seeds} | {r.seed_accuracy_mean:.3f} | "
                     f"{r.lowest_val_loss_seed_accuracy:.3f} | "
                     f"{r.ensemble_accuracy:.3f} | {r.gain:+.3f} [{r.gain_low:+.3f}, {r.gain_high:+.3f}] | "
                     f"{r.seed_roc_auc_mean:.3f}, {r.ensemble_roc_auc:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print(markdown(Path(folder), ensemble_gains(Path(folder))), end="\n\n")
