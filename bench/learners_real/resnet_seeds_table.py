"""The ResNet on the real spirals' test galaxies with three seeds, beside `compact` (README, issue
14): from the seed-0 run of `gz2_spirals_resnet.yaml`, the seeds 1-2 run of
`gz2_spirals_resnet_seeds.yaml` and a `gz2_spirals` run (2 seeds). Per strategy and budget: each
learner's seeds (mean ± spread) and their seed ensemble (the mean probability, as a champion is
served), and the paired difference of the two ensembles on the same 789 galaxies (paired
bootstrap interval over the galaxies, McNemar's p).

    .venv/bin/python bench/learners_real/resnet_seeds_table.py /tmp/gz2res/data/gz2_spirals_resnet \\
        /tmp/gz2res12/data/gz2_spirals_resnet_seeds /tmp/gz2crop/data/gz2_spirals
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is not part of the package

from galpipe.defs.io_managers import finetuned_runs  # noqa: E402
from galpipe.evaluation import aligned_predictions  # noqa: E402
from galpipe.statistics import accuracy, mcnemar, paired_bootstrap  # noqa: E402

TASK = "spiral"
BUDGETS = ("0", "100", "300")


def runs(run_dirs: list[Path], budget: str, strategy: str) -> pd.DataFrame:
    found = [finetuned_runs(d, TASK, budget) for d in run_dirs if (d / "finetuned_models" / f"{budget}|{TASK}.parquet").is_file()]
    table = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=["strategy"])
    return table[table.strategy == strategy]


def seeds_text(rows: pd.DataFrame, labels, probabilities) -> str:
    scores = [accuracy(labels, p) for p in probabilities]
    spread = f" ± {np.std(scores, ddof=1):.3f}" if len(scores) > 1 else ""
    return f"{np.mean(scores):.3f}{spread} ({', '.join(str(int(s)) for s in sorted(rows.seed))})"


def main(resnet_seed0: str, resnet_seeds: str, compact_dir: str) -> None:
    resnet_dirs = [Path(resnet_seed0), Path(resnet_seeds)]
    print("| strategy | N labels | `resnet18_w32`: seeds' mean ± spread (seeds) | its seed ensemble | `compact`: seeds' mean "
          "(seeds) | its seed ensemble | ensembles' difference [95%], McNemar p |")
    print("|---|---|---|---|---|---|---|")
    for budget in BUDGETS:
        for strategy in (["direct"] if budget == "0" else ["full", "scratch"]):
            resnet, compact = runs(resnet_dirs, budget, strategy), runs([Path(compact_dir)], budget, strategy)
            if resnet.empty or compact.empty:
                continue
            common = set.intersection(*(set(ids) for ids in pd.concat([resnet, compact]).test_object_ids))
            _, labels, p_resnet = aligned_predictions(resnet, common)
            _, labels_compact, p_compact = aligned_predictions(compact, common)
            assert (labels == labels_compact).all()
            ensemble_resnet, ensemble_compact = p_resnet.mean(axis=0), p_compact.mean(axis=0)
            difference = paired_bootstrap(labels, ensemble_resnet, ensemble_compact, "accuracy")
            p_value = mcnemar(labels, ensemble_resnet[None], ensemble_compact[None])["p_value"]
            print(f"| {strategy} | {budget} | {seeds_text(resnet, labels, p_resnet)} | "
                  f"{accuracy(labels, ensemble_resnet):.3f} | {seeds_text(compact, labels, p_compact)} | "
                  f"{accuracy(labels, ensemble_compact):.3f} | {difference['difference']:+.3f} "
                  f"[{difference['low']:+.3f}, {difference['high']:+.3f}], p = {p_value:.2g} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
