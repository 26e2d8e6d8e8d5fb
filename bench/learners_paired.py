"""Paired comparisons of `bench/learners.py` results on the development split: per label budget,
each learner and start against a baseline (e.g. `scratch`), scored on the same 400 galaxies with
the same seeds' label draws. Accuracy is the mean over seeds; the difference has its paired
bootstrap interval over the galaxies, and McNemar's p pools the seeds' pairs. At budget 0 (a
model pretrained on the simulation, applied directly) the groups are compared on ROC AUC with the
first group given as `--direct-reference`.

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

from galpipe.statistics import mcnemar, paired_bootstrap  # noqa: E402


def load(paths: list[str]) -> tuple[np.ndarray, dict]:
    """The judged labels and {(learner, start, budget): {seed: run}} over every results file."""
    labels, groups = None, {}
    for path in paths:
        results = json.loads(Path(path).read_text())
        y = np.asarray(results["dev_test_labels"])
        if labels is not None and not np.array_equal(labels, y):
            raise SystemExit(f"{path}: judged on other galaxies than {paths[0]}")
        labels = y
        for run in results["runs"]:
            if "p" in run:
                groups.setdefault((run["learner"], run["start"], run["budget"]), {})[run["seed"]] = run
    return labels, groups


def paired(y: np.ndarray, a: dict, b: dict, metric: str) -> tuple[dict, float, list[int]]:
    """a against b on the seeds both have: the bootstrap difference and McNemar's p (on the
    probabilities as saved, to 4 decimals)."""
    seeds = sorted(a.keys() & b.keys())
    p_a, p_b = np.stack([a[s]["p"] for s in seeds]), np.stack([b[s]["p"] for s in seeds])
    return paired_bootstrap(y, p_a, p_b, metric), mcnemar(y, p_a, p_b)["p_value"], seeds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="bench/learners.py .json files")
    parser.add_argument("--baseline", required=True, help="'LEARNER|START' every other group is compared with")
    parser.add_argument("--direct-reference", help="'LEARNER|START' the others are compared with at budget 0")
    args = parser.parse_args(argv)
    y, groups = load(args.results)
    baseline = tuple(args.baseline.split("|"))
    reference = tuple(args.direct_reference.split("|")) if args.direct_reference else None
    print("| N labels | learner | start | accuracy (seeds) | ROC AUC | against the baseline (or at N=0 the reference): "
          "difference [95%], McNemar p |")
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
                diff, p_value, seeds = paired(y, by_seed, groups[(*against, budget)], metric)
                text = (f"{metric.replace('_', ' ')} {diff['difference']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]"
                        + (f", McNemar p = {p_value:.2g}" if metric == "accuracy" else "") + f" (seeds {seeds})")
            spread = f" ± {np.std(scores, ddof=1):.3f}" if len(scores) > 1 else ""
            print(f"| {budget} | {learner} | {start} | {np.mean(scores):.3f}{spread} ({len(scores)}) | "
                  f"{np.mean(aucs):.3f} | {text} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
