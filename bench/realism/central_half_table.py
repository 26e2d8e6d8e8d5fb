"""The galaxy effects and the balanced colours on gz2_spirals' own frame (the central half), alone
and together (README, issue 14): from runs of `bench/realism/central_half_*.yaml`. Per budget,
`full` (at 0 the model applied directly) of each run: accuracy over seeds, ROC AUC, and against
`scratch` on the same galaxies and seeds (the difference of the seeds' mean accuracies with its
paired bootstrap interval over the galaxies, McNemar's p with the seeds' pairs pooled). `scratch`
is taken from the first run that trained it: it does not depend on the source.

    .venv/bin/python bench/realism/central_half_table.py both=/tmp/cg/data/gz2_central_galaxies_balanced \\
        galaxies=/tmp/cgx/data/gz2_central_galaxies colours=/tmp/cgx/data/gz2_central_balanced \\
        > bench/results/central_half_ablation.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is not part of the package

from bench.learners_real.resnet_seeds_table import runs  # noqa: E402
from galpipe.evaluation import aligned_predictions  # noqa: E402
from galpipe.statistics import accuracy, mcnemar, paired_bootstrap  # noqa: E402

BUDGETS = ("0", "25", "50", "100", "300", "500", "1000")  # those a run lacks are passed over


def main(named_runs: list[str]) -> None:
    named = [(name, Path(folder)) for name, folder in (arg.split("=", 1) for arg in named_runs)]
    print(f"Runs: {', '.join(f'{name} `{folder}`' for name, folder in named)}. Test accuracy, mean ± spread over "
          "seeds (ROC AUC, mean over seeds).\n")
    print("| N labels | effects in the simulated SDSS | `full` (N=0: applied directly) | `full` - `scratch` [95%], McNemar p |")
    print("|---|---|---|---|")
    for budget in BUDGETS:
        scratch = next((r for r in (runs([d], budget, "scratch") for _, d in named) if not r.empty), None)
        for name, folder in named:
            model = runs([folder], budget, "direct" if budget == "0" else "full")
            if model.empty:
                continue
            ids = [*model.test_object_ids, *([] if scratch is None else scratch.test_object_ids)]
            common, labels, p_model = aligned_predictions(model, set.intersection(*(set(i) for i in ids)))
            scores = [accuracy(labels, p) for p in p_model]
            auc = np.mean([roc_auc_score(labels, p) for p in p_model])
            text = f"{np.mean(scores):.3f} ± {np.std(scores, ddof=1):.3f} ({auc:.3f})"
            against = ""
            if budget != "0" and scratch is not None:
                _, labels_scratch, p_scratch = aligned_predictions(scratch, common)
                if not ((labels_scratch == labels).all() and sorted(scratch.seed) == sorted(model.seed)):
                    raise SystemExit(f"N={budget}, {name}: `scratch` is not on the same galaxies and seeds")
                interval = paired_bootstrap(labels, p_model, p_scratch, "accuracy")
                against = (f"{interval['difference']:+.3f} [{interval['low']:+.3f}, {interval['high']:+.3f}], "
                           f"p = {mcnemar(labels, p_model, p_scratch)['p_value']:.2g}")
            print(f"| {budget} | {name} | {text} | {against} |")
        if scratch is not None:
            _, labels, p_scratch = aligned_predictions(scratch)
            scores = [accuracy(labels, p) for p in p_scratch]
            print(f"| {budget} | `scratch` | {np.mean(scores):.3f} ± {np.std(scores, ddof=1):.3f} "
                  f"({np.mean([roc_auc_score(labels, p) for p in p_scratch]):.3f}) | |")


if __name__ == "__main__":
    main(sys.argv[1:])
