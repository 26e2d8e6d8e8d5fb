"""Two learners side by side on the simulated pair (issue 14: choose the default learner from the
simulated pair as well as the real spirals): finished runs of `small` and of
`bench/learners_sim/small_one_cycle.yaml`, the same sky, seeds and test galaxies, only the learner
changed. Accuracy (mean ± spread over seeds) of the model applied directly, `full` at each budget
and `scratch`, and at N=300 the paired difference (second run minus first) on the same galaxies
and seeds: paired bootstrap interval, McNemar's p.

    .venv/bin/python bench/learners_sim/learner_table.py "paper's Adam=/tmp/a/data/small" \\
        "one-cycle=/tmp/b/data/small_one_cycle" > bench/results/learners_small.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is not part of the package

from galpipe.defs.io_managers import finetuned_runs  # noqa: E402
from galpipe.evaluation import paired_accuracy_difference  # noqa: E402

PAIRED_BUDGET = 300


def cell(table: pd.DataFrame, task: str, strategy: str, budget: int) -> str:
    row = table[(table.task == task) & (table.strategy == strategy) & (table.label_budget == budget)]
    return f"{row.accuracy_mean.iloc[0]:.3f} ± {row.accuracy_std.iloc[0]:.3f}" if len(row) else ""


def paired(first: Path, second: Path, task: str, strategy: str) -> str:
    runs = [finetuned_runs(folder, task, str(PAIRED_BUDGET)) for folder in (first, second)]
    runs = [r[(r.strategy == strategy) & (r.selection == "random")] for r in runs]
    paired = paired_accuracy_difference(runs[1], runs[0])
    return (f"{paired['difference']:+.3f} [{paired['low']:+.3f}, {paired['high']:+.3f}], "
            f"p = {paired['mcnemar_p']:.2g}")


def main() -> None:
    (first_name, first), (second_name, second) = [(name, Path(path)) for name, path in
                                                  (arg.split("=", 1) for arg in sys.argv[1:3])]
    tables = {name: pd.read_parquet(folder / "evaluation_table.parquet") for name, folder in
              ((first_name, first), (second_name, second))}
    budgets = sorted(b for b in tables[first_name].label_budget.unique() if b > 0)
    print("| task | learner | applied directly | " + " | ".join(f"full, N={b}" for b in budgets)
          + f" | scratch, N={PAIRED_BUDGET} | scratch, N={budgets[-1]} |")
    print("|---|---|---|" + "---|" * (len(budgets) + 2))
    for task in sorted(tables[first_name].task.unique()):
        for name, table in tables.items():
            cells = [cell(table, task, "direct", 0)] + [cell(table, task, "full", b) for b in budgets] \
                + [cell(table, task, "scratch", PAIRED_BUDGET), cell(table, task, "scratch", budgets[-1])]
            print(f"| {task} | {name} | " + " | ".join(cells) + " |")
        print(f"| {task} | {second_name} - {first_name}, N={PAIRED_BUDGET} | | "
              + " | ".join(paired(first, second, task, "full") if b == PAIRED_BUDGET else "" for b in budgets)
              + f" | {paired(first, second, task, 'scratch')} | |")


if __name__ == "__main__":
    main()
