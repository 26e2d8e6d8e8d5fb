"""Does the same configuration give the same table? Runs `galpipe run` for each project given,
`--repeats` times, each run in a fresh folder of its own (data/, mlruns/, Dagster instance), and
compares their evaluation tables metric by metric: the largest difference between repeats of one
project (0 when a run is reproducible on this machine), and between projects (e.g. `small` against
`small` with `precision: fp32`, which is what separates a CPU with native bf16 from one without).

    .venv/bin/python bench/reproducibility.py small small bench/small_fp32.yaml --out bench/results/reproducibility

Writes `<out>.json` (every run's table and wall time, the machine) and `<out>.md`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is not part of the package

from galpipe.hardware import machine_info  # noqa: E402
from galpipe.project import load_project, project_reference  # noqa: E402

KEYS = ["task", "label_budget", "strategy", "selection"]
METRICS = ["accuracy_mean", "roc_auc_mean", "completeness_1_mean", "purity_1_mean"]


def run_once(project: str, folder: Path) -> tuple[pd.DataFrame, float]:
    """One `galpipe run` of `project` in `folder`: its evaluation table and wall time (s)."""
    env = {**os.environ, "DAGSTER_HOME": str(folder / ".dagster_home")}
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "galpipe"), "run", "--config", project], cwd=folder, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    return pd.read_parquet(folder / "data" / load_project(project).name / "evaluation_table.parquet"), seconds


def largest_differences(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Per metric, the largest absolute difference over the rows both tables hold, and where."""
    both = a.merge(b, on=KEYS, suffixes=("_a", "_b"))
    out = {}
    for metric in METRICS:
        gap = (both[f"{metric}_a"] - both[f"{metric}_b"]).abs()
        row = both.loc[gap.idxmax()] if gap.notna().any() else None
        out[metric] = {"max_abs_difference": float(gap.max()) if row is not None else float("nan"),
                       "mean_abs_difference": float(gap.mean()),
                       "where": "" if row is None else " ".join(str(row[k]) for k in KEYS)}
    return out


def markdown(results: dict) -> str:
    lines = [f"Machine: {results['machine']['cpu']}, {results['machine']['cpus']} CPUs, native bf16: "
             f"{results['machine']['native_bf16']}.", "",
             "| runs compared | metric | largest difference (row) | mean difference over rows |", "|---|---|---|---|"]
    for comparison in results["comparisons"]:
        for metric, d in comparison["differences"].items():
            lines.append(f"| {comparison['a']} vs {comparison['b']} | {metric} | {d['max_abs_difference']:.4f} "
                         f"({d['where']}) | {d['mean_abs_difference']:.4f} |")
    lines += ["", "| run | wall time (s) |", "|---|---|"]
    lines += [f"| {name} | {run['seconds']:.0f} |" for name, run in results["runs"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("projects", nargs="+", help="shipped project names or project files")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each project named")
    parser.add_argument("--out", default="bench/results/reproducibility")
    args = parser.parse_args(argv)
    projects = [str(Path(p).resolve()) if Path(p).suffix else project_reference(p) for p in args.projects]
    runs, tables = {}, {}
    with tempfile.TemporaryDirectory(prefix="galpipe-repro-") as scratch:
        for project in [p for p in projects for _ in range(args.repeats)]:  # a project named twice runs twice
            name = load_project(project).name
            name = f"{name}#{1 + sum(n.startswith(name + '#') for n in tables)}"
            folder = Path(scratch) / name.replace("#", "-")
            folder.mkdir()
            print(f"{name}: galpipe run in {folder}", flush=True)
            tables[name], seconds = run_once(project, folder)
            runs[name] = {"seconds": seconds, "table": tables[name].to_dict(orient="records")}
            print(f"{name}: {seconds:.0f} s", flush=True)
    names = list(tables)
    comparisons = [{"a": a, "b": b, "differences": largest_differences(tables[a], tables[b])}
                   for a, b in itertools.combinations(names, 2)]
    results = {"machine": machine_info(), "runs": runs, "comparisons": comparisons}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
