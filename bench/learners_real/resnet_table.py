"""The ResNet on the real spirals' test galaxies beside `compact` (README, issue 14): from a finished
run of `gz2_spirals_resnet.yaml` and one of `gz2_spirals`, accuracy per strategy and budget, and
the paired difference on the same 789 galaxies and seeds (the ResNet's seeds; paired bootstrap
interval, McNemar's p).

    .venv/bin/python bench/learners_real/resnet_table.py /tmp/gz2res/data/gz2_spirals_resnet \\
        /tmp/gz2crop/data/gz2_spirals
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is not part of the package

from galpipe.defs.io_managers import finetuned_runs  # noqa: E402
from galpipe.evaluation import paired_accuracy_difference  # noqa: E402

TASK = "spiral"


def runs(run_dir: Path, budget: str, strategy: str) -> pd.DataFrame:
    table = finetuned_runs(run_dir, TASK, budget)
    return table[table.strategy == strategy]


def main(resnet_dir: str, compact_dir: str) -> None:
    resnet_dir, compact_dir = Path(resnet_dir), Path(compact_dir)
    budgets = sorted(p.name.split("|")[0] for p in (resnet_dir / "finetuned_models").glob(f"*|{TASK}.parquet"))
    print("| strategy | N labels | `resnet18_w32`: accuracy (ROC AUC) | `compact`, same seeds | difference [95%], McNemar p |")
    print("|---|---|---|---|---|")
    for budget in sorted(budgets, key=lambda b: (len(b), b)):
        for strategy in (["direct"] if budget == "0" else ["full", "scratch"]):
            resnet, compact = runs(resnet_dir, budget, strategy), runs(compact_dir, budget, strategy)
            if resnet.empty:
                continue
            compact = compact[compact.seed.isin(resnet.seed)]
            assert set(resnet.test_object_ids.iloc[0]) == set(compact.test_object_ids.iloc[0]), "other test galaxies"
            paired = paired_accuracy_difference(resnet, compact)
            print(f"| {strategy} | {budget} | {resnet.accuracy.mean():.3f} ({resnet.roc_auc.mean():.3f}) "
                  f"| {compact.accuracy.mean():.3f} ({compact.roc_auc.mean():.3f}) | {paired['difference']:+.3f} "
                  f"[{paired['low']:+.3f}, {paired['high']:+.3f}], p = {paired['mcnemar_p']:.2g} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
