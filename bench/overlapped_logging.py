"""Would logging a fine-tuning run to MLflow while the next run trains shorten a partition? (The
idea left by issue 18's overhead goal.) A `small`-like partition of 25 labels, six runs of
`compact` trained with galpipe's `train_classifier` on 20 images (the 25 labels less a fifth for
validation), each followed by the MLflow calls a fine-tuning run makes (bench/bookkeeping_costs.py's
round): one after the other, against the calls handed to one background thread while the next
run trains (the partition waits for the last). Rounds alternate; medians after one of warm-up.

    .venv/bin/python bench/overlapped_logging.py --out bench/results/overlapped_logging

Writes `<out>.json` and `<out>.md`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not part of the package

from bench.bookkeeping_costs import RUNS_PER_PARTITION, bookkeeping_round, stand_in_plot  # noqa: E402
from galpipe.hardware import machine_info  # noqa: E402
from galpipe.models import build_model  # noqa: E402
from galpipe.tracking import Tracker  # noqa: E402
from galpipe.training import TrainConfig, train_classifier  # noqa: E402

TRAIN_IMAGES, VALIDATION_IMAGES = 20, 5


def train_one(x: np.ndarray, y: np.ndarray, seed: int):
    """One run's training, as a 25-label `small` partition's: 20 images, 5 to validate, early stopping."""
    model = build_model("compact", seed=seed)
    config = TrainConfig(max_epochs=30, patience=10, batch_size=30, seed=seed, min_steps=40, device="cpu")
    train_classifier(model, x, np.arange(TRAIN_IMAGES), y[:TRAIN_IMAGES],
                     np.arange(TRAIN_IMAGES, TRAIN_IMAGES + VALIDATION_IMAGES), y[TRAIN_IMAGES:], config)
    return model


def partition(tracker, x, y, example, plot, overlapped: bool, round_k: int) -> dict:
    """One partition's wall seconds, its training seconds and its bookkeeping seconds."""
    started, training = time.perf_counter(), 0.0
    with ThreadPoolExecutor(1, thread_name_prefix="mlflow-logging") as logger:
        pending = []
        for run in range(RUNS_PER_PARTITION):
            trained_at = time.perf_counter()
            model = train_one(x, y, seed=run)
            training += time.perf_counter() - trained_at
            arguments = (tracker, model, example, plot, 1000 * round_k + run)
            if overlapped:
                pending.append(logger.submit(bookkeeping_round, *arguments))
            else:
                bookkeeping_round(*arguments)
        for future in pending:
            future.result()
    return {"seconds": time.perf_counter() - started, "train_seconds": training}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(TRAIN_IMAGES + VALIDATION_IMAGES, 3, 69, 69)).astype(np.float32)
    y = rng.integers(0, 2, TRAIN_IMAGES + VALIDATION_IMAGES)
    y[:2], y[TRAIN_IMAGES:TRAIN_IMAGES + 2] = (0, 1), (0, 1)
    example = x[:1]
    measured = {"one after the other": [], "logged while the next run trains": []}
    with tempfile.TemporaryDirectory(prefix="galpipe-overlap-") as scratch:
        tracker = Tracker(f"sqlite:///{scratch}/mlflow.db", f"{scratch}/artifacts", "bench-overlap")
        plot = stand_in_plot(Path(scratch))
        for k in range(args.rounds + 1):
            for name in measured:
                measured[name].append(partition(tracker, x, y, example, plot, name != "one after the other", k))
    median = {name: {key: round(statistics.median(r[key] for r in runs[1:]), 2) for key in ("seconds", "train_seconds")}
              for name, runs in measured.items()}
    sequential, overlapped = (median[name]["seconds"] for name in measured)
    results = {"machine": machine_info(), "rounds": args.rounds, "runs_per_partition": RUNS_PER_PARTITION,
               "partition": median, "overlapped_vs_sequential": round(overlapped / sequential, 3)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(results, indent=1))
    lines = [f"Machine: {results['machine']['cpu']}, {results['machine']['torch_threads']} torch threads; a partition of "
             f"{RUNS_PER_PARTITION} `compact` runs on {TRAIN_IMAGES} images each with their MLflow calls; median of "
             f"{args.rounds} alternating rounds after one of warm-up.", "",
             "| MLflow calls | partition, s | of which training, s |", "|---|---|---|"]
    lines += [f"| {name} | {m['seconds']} | {m['train_seconds']} |" for name, m in median.items()]
    lines += ["", f"Overlapped / one after the other: {results['overlapped_vs_sequential']:.3f}"]
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
