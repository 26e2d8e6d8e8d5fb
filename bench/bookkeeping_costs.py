"""What a fine-tuning partition pays for its bookkeeping, call by call (issue 18's overhead goal):
the MLflow calls one fine-tuning run makes (galpipe.experiment.protocol.finetune: the run with its
parameters, the model logged, the curves, the test metrics linked to the model, the confusion
plot, the registration) on a fresh SQLite store like the project's, and the Dagster run of one
partition (`execute_in_process` of a one-asset job, as `galpipe run` launches each partition),
whose asset does nothing but log a line per run as finetune does, on two fresh SQLite instances:
Dagster's defaults (no dagster.yaml) and galpipe's dagster.yaml (galpipe.instance.write_instance_config).
Medians over the rounds after two of warm-up; the calls alternate within each round. A run's
total is the sum of its calls' medians.

    .venv/bin/python bench/bookkeeping_costs.py --out bench/results/bookkeeping_costs

Writes `<out>.json` and `<out>.md`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not part of the package

from galpipe.cli import QUIET  # noqa: E402  (galpipe run's logging: INFO to the console)
from galpipe.hardware import machine_info  # noqa: E402
from galpipe.instance import write_instance_config  # noqa: E402
from galpipe.models import build_model  # noqa: E402
from galpipe.tracking import Tracker  # noqa: E402

RUNS_PER_PARTITION = 6  # a `small` partition of N labels: full, head_only and scratch x 2 seeds
EPOCHS = 40  # the curves logged per run
WARM_UP = 2
DAGSTER_DEFAULTS = "Dagster's defaults (no dagster.yaml)"
GALPIPE_INSTANCE = "galpipe's dagster.yaml"


def bookkeeping_round(tracker: Tracker, model, example: np.ndarray, plot: Path, k: int) -> dict[str, float]:
    """The MLflow calls of one fine-tuning run, in finetune's order, each timed (seconds)."""
    seconds = {}

    def timed(name, call):
        started = time.perf_counter()
        result = call()
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
        return result

    history = [{"epoch": e, "train_loss": 0.5, "val_loss": 0.4, "seconds": 0.01, "images": 25} for e in range(EPOCHS)]
    params = {f"param_{i}": i for i in range(20)}
    started = time.perf_counter()
    run = tracker.run(f"full-featured-25-random-seed{k}", {"stage": "finetuning"}, params)
    run_id = run.__enter__()
    seconds["run: create, parameters"] = time.perf_counter() - started
    timed("log_params (the strategy's extras)", lambda: tracker.log_params(run_id, {"extra": 1}))
    logged = timed("log_model", lambda: tracker.log_model(run_id, model, example))
    timed("log_history", lambda: tracker.log_history(run_id, history))
    timed("log_metrics (test, linked to the model)",
          lambda: tracker.log_metrics(run_id, {f"target_test_{i}": 0.5 for i in range(16)}, model_id=logged.model_id))
    timed("log_artifact (confusion plot)", lambda: tracker.log_artifact(run_id, plot, "plots"))
    timed("register", lambda: tracker.register(logged, "bench-featured-des", {"task": "featured"}))
    timed("run: end", lambda: run.__exit__(None, None, None))
    return seconds


def stand_in_plot(folder: Path) -> Path:
    """A small PNG in place of a run's confusion-matrix plot, for log_artifact to copy."""
    figure, axes = plt.subplots(figsize=(4, 4))
    axes.imshow(np.eye(2))
    plot = folder / "confusion.png"
    figure.savefig(plot)
    plt.close(figure)
    return plot


def dagster_partition_job():
    from dagster import Definitions, StaticPartitionsDefinition, asset, define_asset_job

    @asset(partitions_def=StaticPartitionsDefinition([str(k) for k in range(100)]))
    def partition_of_nothing(context) -> None:
        for seed in range(RUNS_PER_PARTITION):
            context.log.info(f"run {seed}: accuracy 0.5")

    defs = Definitions(assets=[partition_of_nothing], jobs=[define_asset_job("bench_job")])
    return defs.resolve_job_def("bench_job")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()
    from dagster import DagsterInstance

    model = build_model("compact", seed=0)
    example = np.zeros((1, 3, 69, 69), np.float32)
    job = dagster_partition_job()
    mlflow_seconds: dict[str, list[float]] = {}
    dagster_seconds = {DAGSTER_DEFAULTS: [], GALPIPE_INSTANCE: []}
    with tempfile.TemporaryDirectory(prefix="galpipe-bookkeeping-") as scratch:
        homes = {name: Path(scratch, folder) for name, folder in ((DAGSTER_DEFAULTS, "defaults"),
                                                                  (GALPIPE_INSTANCE, "galpipe"))}
        for home in homes.values():
            home.mkdir()
        write_instance_config(homes[GALPIPE_INSTANCE], workers=1)
        tracker = Tracker(f"sqlite:///{scratch}/mlflow.db", f"{scratch}/artifacts", "bench-bookkeeping")
        plot = stand_in_plot(Path(scratch))
        with DagsterInstance.from_config(str(homes[DAGSTER_DEFAULTS])) as defaults, \
                DagsterInstance.from_config(str(homes[GALPIPE_INSTANCE])) as galpipes:
            instances = {DAGSTER_DEFAULTS: defaults, GALPIPE_INSTANCE: galpipes}
            for k in range(args.rounds + WARM_UP):
                for name, value in bookkeeping_round(tracker, model, example, plot, k).items():
                    mlflow_seconds.setdefault(name, []).append(value)
                order = list(instances.items())  # the two instances alternate, each first in every other round
                for name, instance in (order if k % 2 == 0 else order[::-1]):
                    started = time.perf_counter()
                    result = job.execute_in_process(instance=instance, partition_key=str(k), run_config=QUIET)
                    dagster_seconds[name].append(time.perf_counter() - started)
                    assert result.success
    per_call_ms = {name: round(1000 * statistics.median(v[WARM_UP:]), 1) for name, v in mlflow_seconds.items()}
    per_run_ms = round(sum(per_call_ms.values()), 1)
    dagster_ms = {name: round(1000 * statistics.median(v[WARM_UP:]), 1) for name, v in dagster_seconds.items()}
    per_partition_s = round((RUNS_PER_PARTITION * per_run_ms + dagster_ms[GALPIPE_INSTANCE]) / 1000, 2)
    results = {"machine": machine_info(), "rounds": args.rounds, "mlflow_ms_per_call": per_call_ms,
               "mlflow_ms_per_run": per_run_ms, "dagster_ms_per_partition": dagster_ms,
               "runs_per_partition": RUNS_PER_PARTITION, "bookkeeping_seconds_per_partition": per_partition_s}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(results, indent=1))
    lines = [f"Machine: {results['machine']['cpu']}; compact; median of {args.rounds} rounds after {WARM_UP} of warm-up, "
             "fresh SQLite stores (MLflow and Dagster).", "",
             "| what | ms |", "|---|---|"]
    lines += [f"| MLflow, per fine-tuning run: {name} | {ms} |" for name, ms in per_call_ms.items()]
    lines += [f"| MLflow, per fine-tuning run, in all | {per_run_ms} |"]
    lines += [f"| Dagster, per partition: a run of one asset that logs {RUNS_PER_PARTITION} lines, {name} | {ms} |"
              for name, ms in dagster_ms.items()]
    lines += ["", f"A partition of {RUNS_PER_PARTITION} runs: {RUNS_PER_PARTITION} x {per_run_ms} ms + "
                  f"{dagster_ms[GALPIPE_INSTANCE]} ms = {per_partition_s} s of bookkeeping, whatever its training takes."]
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
