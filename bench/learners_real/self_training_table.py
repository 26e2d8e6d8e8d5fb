"""Self-training from the network trained from scratch, on the real spirals' test galaxies (README,
issue 14): from a run of `gz2_spirals_self_training.yaml`. Per budget: `scratch` (the teacher) and
`self_training_scratch` (its student), each seed's accuracy (mean ± spread) and the seeds' ensemble
(the mean probability, as a champion is served); the student minus its teacher on the same galaxies
and seeds (paired bootstrap interval over the galaxies; McNemar's p, the seeds' pairs pooled) and
the same for the two ensembles.

    .venv/bin/python bench/learners_real/self_training_table.py /tmp/st/data/gz2_spirals_self_training \\
        > bench/results/gz2_spirals_self_training.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is not part of the package

from bench.learners_real.resnet_seeds_table import runs, seeds_text  # noqa: E402
from galpipe.evaluation import aligned_predictions  # noqa: E402
from galpipe.statistics import accuracy, mcnemar, paired_bootstrap  # noqa: E402

BUDGETS = ("25", "50", "100", "300")


def difference(labels, p_a, p_b) -> str:
    interval = paired_bootstrap(labels, p_a, p_b, "accuracy")
    return (f"{interval['difference']:+.3f} [{interval['low']:+.3f}, {interval['high']:+.3f}], "
            f"p = {mcnemar(labels, p_a, p_b)['p_value']:.2g}")


def main(run_dir: str) -> None:
    print(f"Run: `{run_dir}`. Accuracy on the test galaxies (ROC AUC of the ensembles in brackets).\n")
    print("| N labels | `scratch` (teacher): seeds | its ensemble | `self_training_scratch`: seeds | its ensemble "
          "| student - teacher, seed by seed [95%], McNemar p | ensembles' difference |")
    print("|---|---|---|---|---|---|---|")
    for budget in BUDGETS:
        teacher, student = runs([Path(run_dir)], budget, "scratch"), runs([Path(run_dir)], budget, "self_training_scratch")
        if teacher.empty or student.empty:
            continue
        teacher, student = teacher.sort_values("seed"), student.sort_values("seed")
        assert teacher.seed.tolist() == student.seed.tolist()
        common = set.intersection(*(set(ids) for ids in [*teacher.test_object_ids, *student.test_object_ids]))
        _, labels, p_teacher = aligned_predictions(teacher, common)
        _, labels_student, p_student = aligned_predictions(student, common)
        assert (labels == labels_student).all()
        ensemble_teacher, ensemble_student = p_teacher.mean(axis=0), p_student.mean(axis=0)
        print(f"| {budget} | {seeds_text(teacher, labels, p_teacher)} | {accuracy(labels, ensemble_teacher):.3f} "
              f"({roc_auc_score(labels, ensemble_teacher):.3f}) | {seeds_text(student, labels, p_student)} | "
              f"{accuracy(labels, ensemble_student):.3f} ({roc_auc_score(labels, ensemble_student):.3f}) | "
              f"{difference(labels, p_student, p_teacher)} | "
              f"{difference(labels, ensemble_student[None], ensemble_teacher[None])} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
