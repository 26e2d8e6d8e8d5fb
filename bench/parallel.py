"""Parallel runs against one after another, side by side on this machine: `galpipe run` of a
project with `--workers 1` (every step in one process) and with `--workers N` (Dagster's run
queue and daemon), each in a fresh folder. Reports both wall times and their ratio, how many
runs went on at once (from the run records' start and end), and the largest difference between
the two evaluation tables.

    .venv/bin/python bench/parallel.py small --workers 2 --out bench/results/parallel-small

Writes `<out>.json` and `<out>.md`.
"""

from __future__ import annotations

import argparse
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

from bench.reproducibility import largest_differences  # noqa: E402
from galpipe.hardware import machine_info  # noqa: E402
from galpipe.project import load_project, project_reference  # noqa: E402


def run(project: str, folder: Path, workers: int) -> dict:
    """One `galpipe run` in `folder`: wall seconds, its per-step timings and its evaluation table."""
    env = {**os.environ, "DAGSTER_HOME": str(folder / ".dagster_home")}
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "galpipe"), "run", "--config", project, "--workers", str(workers)],
                   cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    run_dir = folder / "data" / load_project(project).name
    return {"workers": workers, "seconds": round(seconds, 1),
            "steps": json.loads((run_dir / "run_timings.json").read_text())["steps"],
            "table": pd.read_parquet(run_dir / "evaluation_table.parquet")}


def most_at_once(steps: list[dict]) -> int:
    """The largest number of runs that were going on at one moment."""
    edges = sorted([(s["started"], 1) for s in steps if "started" in s] + [(s["ended"], -1) for s in steps
                                                                             if "ended" in s], key=lambda e: (e[0], e[1]))
    going = most = 0
    for _, change in edges:
        going += change
        most = max(most, going)
    return most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", help="a shipped project's name or a project file")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()
    project = project_reference(args.project)
    results = {"project": args.project, "machine": machine_info(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="galpipe-parallel-") as scratch:
        for workers in (1, args.workers):
            folder = Path(scratch) / f"workers-{workers}"
            folder.mkdir()
            results["runs"].append(run(project, folder, workers))
            print(f"{args.project}, --workers {workers}: {results['runs'][-1]['seconds']:.0f} s", flush=True)
    sequential, parallel = results["runs"]
    results["ratio"] = round(parallel["seconds"] / sequential["seconds"], 3)
    results["most_runs_at_once"] = most_at_once(parallel["steps"])
    results["table_differences"] = largest_differences(sequential["table"], parallel["table"])
    for r in results["runs"]:
        r["table"] = r["table"].to_dict(orient="records")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(results, indent=1, default=str))
    machine = results["machine"]
    lines = [f"Machine: {machine['cpu']}, {machine['cpus']} CPUs. Project `{args.project}`, both runs in one "
             f"invocation of bench/parallel.py, one after the other.", "",
             "| run | wall time (s) | ratio to sequential | most runs at once |", "|---|---|---|---|",
             f"| `--workers 1` (in one process) | {sequential['seconds']:.0f} | 1 | 1 |",
             f"| `--workers {args.workers}` (Dagster's run queue) | {parallel['seconds']:.0f} | {results['ratio']:.2f} | "
             f"{results['most_runs_at_once']} |", "",
             "Largest difference between the two evaluation tables (same rows):", ""]
    lines += [f"- {metric}: {d['max_abs_difference']:.4f} ({d['where']}); mean {d['mean_abs_difference']:.4f}"
              for metric, d in results["table_differences"].items()]
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
