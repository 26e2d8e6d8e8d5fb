"""Two `galpipe run`s of one sky compared on the same test galaxies: per task, label budget,
strategy and selection that both ran, run B's accuracy (and ROC AUC) against run A's, with the
paired bootstrap over the test galaxies (galpipe.statistics.paired_bootstrap: the seeds both ran
averaged, each resample the same galaxies for every seed). For a change that is a project setting
(e.g. `pretraining_augmentation`), where the two runs' evaluation tables alone give no interval.

    .venv/bin/python bench/runs_paired.py RUN_A/data/small RUN_B/data/small --out bench/results/NAME.md

Refuses runs whose test galaxies differ (another sky, split or labels).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not part of the package

from bench.learners_paired import N_BOOTSTRAP, p_text  # noqa: E402
from galpipe.evaluation import with_selection  # noqa: E402
from galpipe.statistics import paired_bootstrap  # noqa: E402

KEYS = ["task", "label_budget", "strategy", "selection"]


def runs(data_dir: Path) -> pd.DataFrame:
    """Every run of the finetuned_models partitions of a project's data folder, one row each."""
    files = sorted((data_dir / "finetuned_models").glob("*.parquet"))
    if not files:
        sys.exit(f"{data_dir}: no finetuned_models partitions (give a project's data folder, e.g. RUN/data/small)")
    table = with_selection(pd.concat([pd.read_parquet(f) for f in files], ignore_index=True))
    twice = table[table.duplicated(KEYS + ["seed"], keep=False)]
    if len(twice):
        sys.exit(f"{data_dir}: {len(twice)} runs share task, budget, strategy, selection and seed; one of each is expected")
    return table


def compared(a: pd.DataFrame, b: pd.DataFrame) -> tuple[list[dict], list[str]]:
    """The compared rows, and what could not be compared (a group in one run only, no seed in common)."""
    rows, left_out = [], []
    groups_b = dict(tuple(b.groupby(KEYS, sort=False)))
    left_out += [f"{key}: in run B only" for key in sorted(set(groups_b) - set(a.groupby(KEYS).groups))]
    for key, group_a in a.groupby(KEYS, sort=False):
        group_b = groups_b.get(key)
        seeds = sorted(set(group_a.seed) & set(group_b.seed)) if group_b is not None else []
        if not seeds:
            left_out.append(f"{key}: " + ("in run A only" if group_b is None else "no seed in both runs"))
            continue
        pick = lambda g: g.set_index("seed").loc[seeds]  # noqa: E731
        ga, gb = pick(group_a), pick(group_b)
        ids, labels = list(ga.test_object_ids.iloc[0]), np.asarray(ga.test_labels.iloc[0])
        both = [*zip(ga.test_object_ids, ga.test_labels), *zip(gb.test_object_ids, gb.test_labels)]
        if any(list(i) != ids or not np.array_equal(np.asarray(y), labels) for i, y in both):
            sys.exit(f"{key}: the two runs' test galaxies or their labels differ; compare runs of one sky, split and labels")
        p_a, p_b = np.stack(ga.test_probabilities.to_numpy()), np.stack(gb.test_probabilities.to_numpy())
        accuracy = paired_bootstrap(labels, p_b, p_a, "accuracy", n_bootstrap=N_BOOTSTRAP)
        auc = paired_bootstrap(labels, p_b, p_a, "roc_auc", n_bootstrap=N_BOOTSTRAP)
        rows.append({**dict(zip(KEYS, key)), "seeds": len(seeds), "accuracy_a": ga.accuracy.mean(),
                     "accuracy_b": gb.accuracy.mean(), "accuracy": accuracy, "roc_auc_a": ga.roc_auc.mean(),
                     "roc_auc_b": gb.roc_auc.mean(), "roc_auc": auc})
    return rows, left_out


def markdown(rows: list[dict], left_out: list[str], a: str, b: str) -> str:
    lines = [f"A: `{a}`; B: `{b}`. Accuracy (ROC AUC) averaged over the seeds both ran; B - A with its paired "
             "bootstrap 95% interval and p over the test galaxies.", "",
             "| task | N | strategy | selection | seeds | A | B | B - A, accuracy | B - A, ROC AUC |",
             "|---|---|---|---|---|---|---|---|---|"]

    def cell(d: dict) -> str:
        return f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}], {p_text(d['p_value'])}"

    for r in sorted(rows, key=lambda r: (r["task"], int(r["label_budget"]) if str(r["label_budget"]).isdigit() else 10**9,
                                         r["strategy"])):
        lines.append(f"| {r['task']} | {r['label_budget']} | {r['strategy']} | {r['selection']} | {r['seeds']} | "
                     f"{r['accuracy_a']:.3f} ({r['roc_auc_a']:.3f}) | {r['accuracy_b']:.3f} ({r['roc_auc_b']:.3f}) | "
                     f"{cell(r['accuracy'])} | {cell(r['roc_auc'])} |")
    if left_out:
        lines += ["", f"Not compared ({len(left_out)}):", *[f"- {why}" for why in left_out]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", type=Path, help="the baseline run's data folder")
    parser.add_argument("run_b", type=Path, help="the other run's data folder")
    parser.add_argument("--out", help="also write the table here (.md)")
    args = parser.parse_args()
    text = markdown(*compared(runs(args.run_a), runs(args.run_b)), str(args.run_a), str(args.run_b))
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
