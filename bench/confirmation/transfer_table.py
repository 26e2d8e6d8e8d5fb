"""The README's transfer table from one run's evaluation table: per task, accuracy as the seed mean
± the spread over seeds [95% bootstrap interval over the test galaxies], then completeness /
purity of the positive class; the SDSS validation accuracy of the pretrained models (seed mean)
first. Columns are `strategy:budget` (budget 0 is the model applied directly).

    .venv/bin/python bench/confirmation/transfer_table.py data/paper_confirmation_headline \\
        direct:0 full:25 full:100 full:500 head_only:500 scratch:500 full:full scratch:full
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

POSITIVE_CLASS_NAMES = {"featured": "featured", "edge_on": "edge-on", "bar": "barred", "spiral": "spiral"}


def task_order(tasks) -> list[str]:
    """The README's order: featured, edge_on, bar, then any others."""
    known = list(POSITIVE_CLASS_NAMES)
    return sorted(tasks, key=lambda t: known.index(t) if t in known else len(known))


def accuracy_cell(row: pd.Series) -> str:
    """Seed mean ± spread over seeds [95% bootstrap interval over the test galaxies]."""
    return f"{row.accuracy_mean:.3f} ± {row.accuracy_std:.3f} [{row.accuracy_low:.3f}, {row.accuracy_high:.3f}]"


def completeness_purity(row: pd.Series) -> str:
    purity = "-" if pd.isna(row.purity_1_mean) else f"{row.purity_1_mean:.3f}"
    completeness = "0" if row.completeness_1_mean == 0 else f"{row.completeness_1_mean:.3f}"
    return f"{completeness} / {purity}"


def source_validation(run: Path, task: str) -> float:
    seeds = json.loads((run / "pretrained_model" / f"{task}.json").read_text())["seeds"].values()
    return float(np.mean([s["source_val"]["accuracy"] for s in seeds]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run's folder, data/<project>/")
    parser.add_argument("columns", nargs="+", help="strategy:budget, e.g. direct:0 full:25 scratch:full")
    args = parser.parse_args()
    # Budgets as text: "0", "25", ... are the keys of the project's label_budgets and of comparisons.csv.
    table = pd.read_csv(args.run / "evaluation_table.csv", dtype={"label_budget": str})
    table = table[table.selection.isin(["random", "none"])]
    # The evaluation table names the whole pool ("full") by its size: the labelled galaxies outside the test set.
    matched = pd.read_parquet(args.run / "matched_catalog.parquet", columns=["split"])
    pool_size = str(int((matched.split == "pool").sum()))
    columns = [(s, pool_size if b == "full" else b) for s, b in (c.split(":") for c in args.columns)]
    header = ["task", "SDSS validation"] + [
        "applied directly" if s == "direct" else f"{s}, N={int(b):,}" for s, b in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    tasks = task_order(table.task.unique())
    for task in tasks:
        rows = table[table.task == task].set_index(["strategy", "label_budget"])
        missing = [f"{s}:{b}" for s, b in columns if (s, b) not in rows.index]
        if missing:
            raise SystemExit(f"{args.run}: no {', '.join(missing)} for {task} in evaluation_table.csv")
        found = [rows.loc[(s, b)] for s, b in columns]
        validation = f"{source_validation(args.run, task):.3f}"
        lines.append(f"| {task}: accuracy | {validation} | " + " | ".join(accuracy_cell(r) for r in found) + " |")
        lines.append(f"| {task}: completeness / purity of {POSITIVE_CLASS_NAMES.get(task, task)} | | "
                     + " | ".join(completeness_purity(r) for r in found) + " |")
    print("\n".join(lines))
    print(f"\nThe whole pool ('full'): {int(pool_size):,} labels\n")
    print(paired_table(args.run, columns, tasks))


def paired_table(run: Path, columns: list[tuple[str, str]], tasks: list[str]) -> str:
    """The run's paired comparisons (comparisons.csv: McNemar's test of accuracy, the ROC AUC difference
    with its paired-bootstrap interval) between the table's columns, on the same galaxies and seeds."""
    pairs = pd.read_csv(run / "comparisons.csv", dtype={"label_budget": str})
    lines = ["| task | N | strategy | against | accuracy | McNemar p | ROC AUC difference |", "|---|---|---|---|---|---|---|"]
    wanted = set(columns)
    for task in tasks:
        rows = pairs[(pairs.task == task) & (pairs.selection.isin(["random", "none"]))]
        for r in rows.itertuples():
            against = tuple(r.against.split(" N="))
            if (r.strategy, r.label_budget) in wanted and against in wanted:
                lines.append(f"| {task} | {r.label_budget} | {r.strategy} | {r.against} | {r.accuracy:.3f} against "
                             f"{r.accuracy_against:.3f} | {r.mcnemar_p:.2g} | {r.roc_auc_difference:+.3f} "
                             f"[{r.roc_auc_difference_low:+.3f}, {r.roc_auc_difference_high:+.3f}] |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
