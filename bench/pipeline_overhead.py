"""Where a `small` fine-tuning partition's time goes, for two or more `galpipe run`s side by side
(e.g. before and after a change, run one after the other on the same machine): per partition its
wall time, the training in it (`train_seconds` of its MLflow runs), the test evaluation
(`*_evaluate_seconds`), and the rest (Dagster's step, MLflow logging and registering, loading),
from each run folder's data/<profile>/run_timings.json and MLflow store (bench/run.py's pipeline
section). Also whether each run's evaluation table matches the first's: a change meant only to
save time must leave every number as it was.

    .venv/bin/python bench/pipeline_overhead.py --profile small before=/path/to/run1 after=/path/to/run2 \
        --out bench/results/pipeline-overhead

Writes `<out>.json` and `<out>.md`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not part of the package

from bench.run import pipeline_section  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="LABEL=FOLDER: a folder `galpipe run --profile PROFILE` ran in")
    parser.add_argument("--profile", default="small")
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()
    results, runs_by_label = {}, {}
    for spec in args.runs:
        label, _, folder = spec.partition("=")
        if not folder:
            parser.error(f"{spec}: give LABEL=FOLDER")
        runs_by_label[label] = Path(folder)
        section = pipeline_section([f"{args.profile}={folder}"])[args.profile]
        if "skipped" in section:
            sys.exit(f"{label}: {section['skipped']}")
        results[label] = section
    labels = list(results)
    partitions = [p["partition"] for p in results[labels[0]]["finetune_partitions"]]
    by_label = {label: {p["partition"]: p for p in r["finetune_partitions"]} for label, r in results.items()}
    runs = "; ".join(f"{k}: {r['cpu']}, {r['seconds']:.0f} s end to end, finished {r['finished_utc']}"
                     for k, r in results.items())
    lines = [f"`galpipe run --profile {args.profile}`, {runs}.",
             "", "Per fine-tuning partition: wall seconds = training + test evaluation + the rest (Dagster's step, "
                 "MLflow logging and registering, loading); the rest's share of the partition.", "",
             "| partition | " + " | ".join(f"{k}: seconds (train / evaluate / rest) | {k}: rest" for k in labels) + " |",
             "|---|" + "---|---|" * len(labels)]
    for partition in partitions:
        cells = []
        for label in labels:
            p = by_label[label].get(partition)
            if p is None:
                cells += ["", ""]
                continue
            rest = p["seconds"] - p["train_seconds"] - p["evaluate_seconds"]
            cells += [f"{p['seconds']:.2f} ({p['train_seconds']:.1f} / {p['evaluate_seconds']:.1f} / {rest:.1f})",
                      f"{p['dagster_mlflow_fraction']:.0%}"]
        lines.append(f"| {partition} | " + " | ".join(cells) + " |")
    lines.append("")
    first = _evaluation_table(runs_by_label[labels[0]], args.profile)
    for label in labels[1:]:
        other = _evaluation_table(runs_by_label[label], args.profile)
        identical = first.equals(other)  # every cell, text and NaN included
        same_shape = list(first.columns) == list(other.columns) and len(first) == len(other)
        numbers = first.select_dtypes("number").columns
        difference = float((first[numbers] - other[numbers]).abs().max().max()) if same_shape else None
        results[label]["evaluation_table_identical_to_first"] = identical
        results[label]["evaluation_table_max_difference_from_first"] = difference
        lines.append(f"- Evaluation table of {label} against {labels[0]}'s: " + (
            "identical" if identical else "not the same rows and columns" if difference is None
            else f"not identical; numbers differ by up to {difference:.3g}") + ".")
    for label, r in results.items():
        parts = r["finetune_partitions"]
        lines.append(f"- {label}: Dagster + MLflow (neither training nor evaluation) median "
                     f"{r['dagster_mlflow_fraction_median']:.0%}, at most {r['dagster_mlflow_fraction_max']:.0%}; "
                     f"fine-tuning partitions {sum(p['seconds'] for p in parts):.0f} s in all, median "
                     f"{statistics.median(p['seconds'] for p in parts):.2f} s.")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(results, indent=1))
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _evaluation_table(folder: Path, profile: str) -> pd.DataFrame:
    return pd.read_parquet(folder / "data" / profile / "evaluation_table.parquet")


if __name__ == "__main__":
    main()
