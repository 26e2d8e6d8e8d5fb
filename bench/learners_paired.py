"""Paired comparisons of `bench/learners.py` results on the development split: per label budget,
each learner and start against a baseline (e.g. `scratch`), scored on the same 400 galaxies with
the same seeds' label draws. Accuracy is the mean over seeds; the difference has its paired
bootstrap interval over the galaxies and the bootstrap's two-sided p (each resample draws the
same galaxies for every seed, so seeds are not counted as independent pairs, as McNemar's test
pooled over seeds would). At budget 0 (a model pretrained on the simulation, applied directly)
the groups are compared on ROC AUC with `--direct-reference`: the difference of the runs' own
ROC AUCs, and the bootstrap on the probabilities as saved (files written before 2026-11-28 kept
4 decimals, which ties a saturated model's small probabilities and lowers its ROC AUC).

    .venv/bin/python bench/learners_paired.py /tmp/lrn/ns.json /tmp/lrn/comb.json \\
        --baseline "compact, one-cycle, galaxy aug. (central half, + neighbours & seeing)|scratch" \\
        --direct-reference "compact, one-cycle, galaxy aug. (central half, galaxy effects + balanced colours)|simulation"

Results files from one development split only (the script checks that their judged labels agree).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not part of the package

from galpipe.statistics import paired_bootstrap  # noqa: E402

N_BOOTSTRAP = 10_000  # resamples of the galaxies: p down to 2e-4


def p_text(p_value: float) -> str:
    if np.isnan(p_value):
        return "p undefined"
    return f"p = {p_value:.2g}" if p_value > 0 else f"p < {2 / N_BOOTSTRAP:g}"


def load(paths: list[str]) -> tuple[np.ndarray, dict]:
    """The judged labels and {(learner, start, budget): {seed: run}} over every results file. A run
    in two files with the same probabilities is counted once; with different ones it is an error."""
    labels, groups = None, {}
    for path in paths:
        results = json.loads(Path(path).read_text())
        if not results.get("dev_test_labels"):
            raise SystemExit(f"{path}: written before bench/learners.py saved the judged labels; run it again")
        y = np.asarray(results["dev_test_labels"])
        if labels is not None and not np.array_equal(labels, y):
            raise SystemExit(f"{path}: judged on other galaxies than {paths[0]}")
        labels = y
        for run in results["runs"]:
            if "p" in run:
                by_seed = groups.setdefault((run["learner"], run["start"], run["budget"]), {})
                if run["seed"] in by_seed and by_seed[run["seed"]]["p"] == run["p"]:
                    continue  # one run recorded in two files (a pretraining that each file's run repeated)
                if run["seed"] in by_seed:
                    raise SystemExit(f"{path}: {run['learner']}, {run['start']}, N={run['budget']}, seed {run['seed']} "
                                     "appears twice (in this file or an earlier one)")
                by_seed[run["seed"]] = run
    return labels, groups


def paired(y: np.ndarray, a: dict, b: dict, metric: str) -> tuple[dict, list[int]]:
    """a against b on the seeds both have: the paired bootstrap on the probabilities as saved."""
    seeds = sorted(a.keys() & b.keys())
    p_a, p_b = np.stack([a[s]["p"] for s in seeds]), np.stack([b[s]["p"] for s in seeds])
    return paired_bootstrap(y, p_a, p_b, metric, n_bootstrap=N_BOOTSTRAP), seeds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="bench/learners.py .json files")
    parser.add_argument("--baseline", required=True, help="'LEARNER|START' every other group is compared with")
    parser.add_argument("--direct-reference", help="'LEARNER|START' the others are compared with at budget 0")
    args = parser.parse_args(argv)
    y, groups = load(args.results)
    baseline = tuple(args.baseline.split("|"))
    reference = tuple(args.direct_reference.split("|")) if args.direct_reference else None
    print("| N labels | learner | start | accuracy (seeds) | ROC AUC | against the baseline (at N=0 the reference): "
          "difference [95%], bootstrap p (seeds) |")
    print("|---|---|---|---|---|---|")
    for budget in sorted({key[2] for key in groups}):
        against = reference if budget == 0 else baseline
        metric = "roc_auc" if budget == 0 else "accuracy"
        for (learner, start, b), by_seed in sorted(groups.items()):
            if b != budget:
                continue
            # As bench/learners.py scored them, on the unrounded probabilities.
            scores, aucs = [run["accuracy"] for run in by_seed.values()], [run["roc_auc"] for run in by_seed.values()]
            text = ""
            if against and (learner, start) != against and (*against, budget) in groups:
                other = groups[(*against, budget)]
                diff, seeds = paired(y, by_seed, other, metric)
                interval = f"[{diff['low']:+.3f}, {diff['high']:+.3f}], {p_text(diff['p_value'])} (seeds {seeds})"
                if metric == "accuracy":
                    text = f"{diff['difference']:+.3f} {interval}"
                else:  # the runs' own ROC AUCs, then the bootstrap on the saved probabilities
                    own = np.mean([by_seed[s]["roc_auc"] - other[s]["roc_auc"] for s in seeds])
                    text = f"ROC AUC {own:+.3f}; on the saved probabilities {diff['difference']:+.3f} {interval}"
            spread = f" ± {np.std(scores, ddof=1):.3f}" if len(scores) > 1 else ""
            print(f"| {budget} | {learner} | {start} | {np.mean(scores):.3f}{spread} ({len(scores)}) | "
                  f"{np.mean(aucs):.3f} | {text} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
