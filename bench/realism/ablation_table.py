"""The realism ablation's table (README, issue 14) from finished runs of `gz2_spirals_whole_frame` and its
`bench/realism/gz2_*.yaml` variants: the model applied directly (accuracy over seeds, ROC AUC with
its bootstrap interval) and `full` at N=300, with its paired difference from the first run on the
same test galaxies and seeds (paired bootstrap interval of the accuracy difference, McNemar's p),
and from the first run's `scratch` at N=300 (the baseline pretraining must beat).

    .venv/bin/python bench/realism/ablation_table.py none=/tmp/gz2/data/gz2_spirals_whole_frame \\
        colour=/tmp/abl_colour/data/gz2_realism_colour

With `--more` (runs of bench/realism/ablation_more.sh): a second table of what the first leaves
out, AdaBN at budget 0 (ROC AUC with its interval, accuracy) and `full` at N=25 and 100, each
`full` against the first run's `scratch` at the same N.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is not part of the package

from galpipe.defs.io_managers import finetuned_runs  # noqa: E402
from galpipe.evaluation import paired_accuracy_difference  # noqa: E402

TASK, BUDGET = "spiral", "300"


def strategy_runs(run_dir: Path, strategy: str = "full", budget: str = BUDGET) -> pd.DataFrame:
    """The runs of `strategy` at N=`budget`, one per seed, with their per-galaxy test predictions."""
    runs = finetuned_runs(run_dir, TASK, budget)
    runs = runs[runs.strategy == strategy]
    if runs.empty:  # e.g. the first run named without `scratch` (ablation_more.sh's "none" has it)
        raise SystemExit(f"{run_dir}: no `{strategy}` runs at N={budget}")
    assert len({frozenset(ids) for ids in runs.test_object_ids}) == 1, f"{run_dir}: seeds scored different galaxies"
    return runs


def main() -> None:
    more = "--more" in sys.argv[1:]
    named_runs = [arg.split("=", 1) for arg in sys.argv[1:] if arg != "--more"]
    print("| effect | applied directly: accuracy | applied directly: ROC AUC | `full`, N=300: accuracy | against the first "
          "| against the first's `scratch` |")
    print("|---|---|---|---|---|---|")
    baseline = scratch = None
    for name, path in named_runs:
        run_dir = Path(path)
        table = pd.read_parquet(run_dir / "evaluation_table.parquet")
        direct = table[table.strategy == "direct"].iloc[0]
        full = table[(table.strategy == "full") & (table.label_budget == int(BUDGET))].iloc[0]
        runs = strategy_runs(run_dir)
        against = ""
        if baseline is None:
            baseline, scratch = runs, strategy_runs(run_dir, "scratch")
        else:
            against = compared(run_dir, runs, baseline)
        print(f"| {name} | {direct.accuracy_mean:.3f} ± {direct.accuracy_std:.3f} | {direct.roc_auc_mean:.3f} "
              f"[{direct.roc_auc_low:.3f}, {direct.roc_auc_high:.3f}] | {full.accuracy_mean:.3f} ± {full.accuracy_std:.3f} "
              f"[{full.accuracy_low:.3f}, {full.accuracy_high:.3f}] | {against} | {compared(run_dir, runs, scratch)} |")
    if more:
        print()
        more_table(named_runs)


def more_table(named_runs: list[list[str]]) -> None:
    """AdaBN at budget 0 and `full` at the few-label budgets, each `full` against the first run's
    `scratch` at its N."""
    budgets = ("25", "100")
    print("| effect | AdaBN: ROC AUC | AdaBN: accuracy | " + " | ".join(
        f"`full`, N={n}: accuracy | against the first's `scratch`, N={n}" for n in budgets) + " |")
    print("|---|---|---|" + "---|---|" * len(budgets))
    scratch = None
    for name, path in named_runs:
        run_dir = Path(path)
        table = pd.read_parquet(run_dir / "evaluation_table.parquet")
        adabn = table[table.strategy == "adabn"].iloc[0]
        if scratch is None:
            scratch = {n: strategy_runs(run_dir, "scratch", n) for n in budgets}
        cells = []
        for n in budgets:
            full = table[(table.strategy == "full") & (table.label_budget == int(n))].iloc[0]
            cells += [f"{full.accuracy_mean:.3f} ± {full.accuracy_std:.3f}",
                      compared(run_dir, strategy_runs(run_dir, "full", n), scratch[n])]
        print(f"| {name} | {adabn.roc_auc_mean:.3f} [{adabn.roc_auc_low:.3f}, {adabn.roc_auc_high:.3f}] | "
              f"{adabn.accuracy_mean:.3f} ± {adabn.accuracy_std:.3f} | " + " | ".join(cells) + " |")


def compared(run_dir: Path, runs: pd.DataFrame, baseline: pd.DataFrame) -> str:
    """The accuracy difference of `runs` from `baseline` on the same galaxies and seeds, with McNemar's p."""
    assert set(runs.test_object_ids.iloc[0]) == set(baseline.test_object_ids.iloc[0]), \
        f"{run_dir}: another test set than the first run's"
    paired = paired_accuracy_difference(runs, baseline)  # seed k beside seed k, galaxies aligned
    return (f"{paired['difference']:+.3f} [{paired['low']:+.3f}, {paired['high']:+.3f}], "
            f"McNemar p = {paired['mcnemar_p']:.2g}")


if __name__ == "__main__":
    main()
