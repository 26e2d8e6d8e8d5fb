"""The README's adaptation tables from one run: test accuracy per strategy (and label selection)
at the adaptation budgets, mean ± spread over seeds [95% bootstrap interval], one column per
task; then the goals as `evaluation_table` judged them (adaptation_goals.csv), each with its paired
difference, interval and p (the unsupervised goal's: the paired bootstrap's, which judges it since
2026-11-28; McNemar's, seeds pooled, in files made before; the few-labels goal's: McNemar's).

    .venv/bin/python bench/confirmation/adaptation_table.py data/paper_confirmation_headline
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is not part of the package

from bench.confirmation.transfer_table import accuracy_cell, task_order  # noqa: E402
from galpipe.statistics import N_BOOTSTRAP  # noqa: E402


def accuracy_table(table: pd.DataFrame, budgets: list[str], reference: str, tasks: list[str]) -> str:
    rows = table[table.label_budget.isin(budgets) | ((table.label_budget == reference) & (table.strategy == "full")
                                                      & (table.selection == "random"))]
    lines = ["| strategy (selection) | N | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    order = sorted({(int(b), s, sel) for b, s, sel in zip(rows.label_budget, rows.strategy, rows.selection)},
                   key=lambda k: (k[0], k[1] != "direct", k[1] != "full", k[1], k[2] != "random", k[2]))
    for budget, strategy, selection in order:
        name = strategy if selection in ("random", "none") else f"{strategy} ({selection})"
        cells = []
        for task in tasks:
            found = rows[(rows.task == task) & (rows.label_budget == str(budget)) & (rows.strategy == strategy)
                         & (rows.selection == selection)]
            cells.append(accuracy_cell(found.iloc[0]) if len(found) else "")
        lines.append(f"| {name} | {budget} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def unsupervised_p(goal) -> str:
    """The p that judged the unsupervised goal: the paired bootstrap's where the file has it."""
    p_value = getattr(goal, "unsupervised_p", float("nan"))
    if pd.notna(p_value):
        return f"bootstrap p = {p_value:.2g}" if p_value > 0 else f"bootstrap p < {2 / N_BOOTSTRAP:g}"
    return f"McNemar p (seeds pooled) = {goal.unsupervised_mcnemar_p:.2g}"


def goals_table(goals: pd.DataFrame) -> str:
    lines = ["| goal | " + " | ".join(goals.task) + " |", "|---|" + "---|" * len(goals)]
    unsupervised, few = [], []
    for g in goals.itertuples():
        unsupervised.append(
            f"{g.best_unsupervised} {g.best_unsupervised_accuracy:.3f} against {g.direct_accuracy:.3f}: "
            f"**{'met' if g.unsupervised_goal_met else 'not met'}**, {g.unsupervised_difference:+.3f} "
            f"[{g.unsupervised_low:+.3f}, {g.unsupervised_high:+.3f}], {unsupervised_p(g)}; "
            f"completeness / purity {g.direct_completeness_1:.2f} / {g.direct_purity_1:.2f} → "
            f"{g.best_unsupervised_completeness_1:.2f} / {g.best_unsupervised_purity_1:.2f}")
        few.append(
            f"{g.best_few_labels} {g.best_few_labels_accuracy:.3f} against {g.reference} {g.reference_accuracy:.3f}: "
            f"**{'met' if g.few_labels_goal_met else 'not met'}**, {g.few_labels_difference:+.3f} "
            f"[{g.few_labels_low:+.3f}, {g.few_labels_high:+.3f}], McNemar p = {g.few_labels_mcnemar_p:.2g}; "
            f"completeness / purity {g.best_few_labels_completeness_1:.2f} / {g.best_few_labels_purity_1:.2f} "
            f"against {g.reference_completeness_1:.2f} / {g.reference_purity_1:.2f}")
    lines.append("| best at budget 0 against direct | " + " | ".join(unsupervised) + " |")
    lines.append("| best at N <= 50 against the reference | " + " | ".join(few) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run's folder, data/<project>/")
    parser.add_argument("--budgets", nargs="+", default=["0", "25", "50"])
    args = parser.parse_args()
    # Budgets as text, as the project's label_budgets name them.
    table = pd.read_csv(args.run / "evaluation_table.csv", dtype={"label_budget": str})
    tasks = task_order(table.task.unique())
    goals = pd.read_csv(args.run / "adaptation_goals.csv").set_index("task").loc[tasks].reset_index()
    # The few-label goal's reference ("full N=500"), as evaluation_table judged it, is the table's last row.
    reference = goals.reference.iloc[0].split(" N=")[1]
    print(accuracy_table(table, args.budgets, reference, tasks))
    print()
    print(goals_table(goals))


if __name__ == "__main__":
    main()
