"""The CUDA path, checked and timed on a GPU machine beside its own CPU, in one run.

Needs only torch, numpy and safetensors (so it runs where galpipe's other dependencies are not
installed) and a sample of model inputs with labels, made here with `--export`:

    .venv/bin/python bench/cuda_check.py --export data/gz2_spirals bench/cuda_sample.npz
    python3 bench/cuda_check.py bench/cuda_sample.npz --out results.json     # on the GPU machine

Checks: training runs on CUDA with autocast (bf16 or fp16, as galpipe.hardware resolves it) and
learns (test accuracy and ROC AUC beside the same training on the CPU); fp32 probabilities of one
model agree on CUDA and CPU; a model saved on CUDA loads back with the same outputs. Times:
training and prediction images/s, CUDA against the CPU, in the same run, each after one warm-up epoch;
the first (cold) CUDA epoch; torch.profiler's CPU and GPU totals over two CUDA epochs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from galpipe.models import build_model, load_model_files, save_model_files  # noqa: E402
from galpipe.training import TrainConfig, predict_proba, train_classifier  # noqa: E402


def export(run_dir: Path, out: Path, n: int = 1200) -> None:
    """A sample of a run's target model inputs (float16) with the first task's labels and split."""
    import pandas as pd

    matched = pd.read_parquet(run_dir / "matched_catalog.parquet")
    index = pd.read_parquet(run_dir / "target" / "model_inputs.parquet")
    task = next(c for c in ("spiral", "featured") if c in matched)
    rows = matched[matched.split.isin(["pool", "test"])].merge(index[index.status == "ok"], on="object_id")
    rows = rows.sample(min(n, len(rows)), random_state=0)
    x = np.load(run_dir / "target" / "model_inputs_69px.npy", mmap_mode="r")[np.sort(rows.row.to_numpy())]
    rows = rows.sort_values("row")
    np.savez_compressed(out, x=x.astype(np.float16), y=rows[task].to_numpy(np.int64),
                        test=(rows.split == "test").to_numpy(), task=task)
    print(f"{out}: {len(rows)} galaxies, task {task}, {out.stat().st_size / 1e6:.1f} MB")


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    order = np.argsort(p)
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1)
    n1 = y.sum()
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(y) - n1)))


def train_and_time(x, y, train, test, device: str, epochs: int) -> dict:
    model = build_model("compact", seed=0)
    config = TrainConfig(max_epochs=epochs, patience=epochs, batch_size=64, seed=0, device=device)
    validation = train[::5]
    fit = np.setdiff1d(train, validation)
    started = time.perf_counter()
    history = train_classifier(model, x, fit, y[fit], validation, y[validation], config)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    p = predict_proba(model, x[test], device=device)
    predict_seconds = time.perf_counter() - started
    return {"device": device, "precision": config.precision, "epochs": len(history),
            "train_images_per_s": round(len(fit) * len(history) / seconds, 1),
            "predict_images_per_s": round(len(test) / predict_seconds, 1),
            "test_accuracy": round(float(((p >= 0.5) == y[test]).mean()), 3),
            "test_roc_auc": round(roc_auc(y[test], p), 3), "model": model}


def profile_cuda(x, y, train, test) -> dict:
    """torch.profiler's totals over two CUDA training epochs: time the CPU spends (launching kernels,
    copying batches) against time the GPU computes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        train_and_time(x, y, train, test, "cuda", 2)
    events = profiler.key_averages()
    return {"self_cpu": round(sum(e.self_cpu_time_total for e in events) / 1000, 1),
            "self_cuda": round(sum(getattr(e, "self_device_time_total", 0) for e in events) / 1000, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sample", nargs="?", default="bench/cuda_sample.npz")
    parser.add_argument("--export", metavar="RUN_DIR", help="write the sample from a run's data folder and stop")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", default="cuda_check.json")
    args = parser.parse_args(argv)
    if args.export:
        export(Path(args.export), Path(args.sample))
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    data = np.load(args.sample)
    x, y, is_test = data["x"].astype(np.float32), data["y"], data["test"]
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    results = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "cpu_threads": torch.get_num_threads(),
               "task": str(data["task"]), "n_train": len(train), "n_test": len(test)}
    started = time.perf_counter()
    cold = train_and_time(x, y, train, test, "cuda", 1)  # the first epoch also sets up CUDA's context and cuDNN
    results["cuda_first_epoch_seconds"] = round(time.perf_counter() - started, 2)
    train_and_time(x, y, train, test, "cpu", 1)
    cold.pop("model")
    runs = {device: train_and_time(x, y, train, test, device, args.epochs) for device in ("cuda", "cpu")}
    results["cuda_warm_epoch_seconds"] = round(len(train) * 0.8 / runs["cuda"]["train_images_per_s"], 2)
    results["profile_two_cuda_epochs_ms"] = profile_cuda(x, y, train, test)
    cuda_model = runs["cuda"].pop("model")
    runs["cpu"].pop("model")
    # One model, fp32 probabilities on both devices.
    p_cuda = predict_proba(cuda_model, x[test], device="cuda")
    p_cpu = predict_proba(cuda_model.cpu(), x[test], device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        loaded = load_model_files(*save_model_files(cuda_model, folder))
    p_loaded = predict_proba(loaded, x[test], device="cpu")
    results |= {"runs": runs, "max_abs_diff_cuda_vs_cpu": float(np.abs(p_cuda - p_cpu).max()),
                "max_abs_diff_saved_vs_loaded": float(np.abs(p_loaded - p_cpu).max()),
                "cuda_over_cpu_training_speed": round(runs["cuda"]["train_images_per_s"] / runs["cpu"]["train_images_per_s"], 2)}
    ok = results["max_abs_diff_cuda_vs_cpu"] < 1e-3 and results["max_abs_diff_saved_vs_loaded"] < 1e-6 \
        and runs["cuda"]["test_roc_auc"] > 0.6
    results["passed"] = bool(ok)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
