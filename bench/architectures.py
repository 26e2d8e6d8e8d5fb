"""Architectures side by side on one profile's data (`--architectures`; by default ds18, the paper's
CNN, against compact, galpipe's default), in one run: FLOPs, training speed, SDSS validation
accuracy, DES test accuracy applied directly and after `full` fine-tuning on N DES labels, per
task, with the pipeline's own protocol
(galpipe.experiment: pretrained with seed 0, fine-tuned over --seeds).
Run from the repository root after `make run` (it reads data/<profile>/):

    .venv/bin/python bench/architectures.py --profile small --budget 300 --seeds 0
    .venv/bin/python bench/architectures.py --tasks edge_on bar --architectures compact resnet18_w32
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import torch

from galpipe.experiment.protocol import Recorder, TransferData, finetune, pretrain
from galpipe.hardware import machine_info
from galpipe.models import build_model, count_flops
from galpipe.preprocessing import ModelInputs
from galpipe.project import load_project
from galpipe.tracking import Tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="small")
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tasks", nargs="+", default=["featured", "edge_on", "bar"])
    parser.add_argument("--architectures", nargs="+", default=["compact", "ds18"])
    args = parser.parse_args()
    run_dir = Path(f"data/{args.profile}")
    inputs = {role: ModelInputs(str(run_dir / role / "model_inputs_69px.npy"),
                                pd.read_parquet(run_dir / role / "model_inputs.parquet")) for role in ("source", "target")}
    data = TransferData(pd.read_parquet(run_dir / "source" / "catalog.parquet"), inputs["source"],
                        pd.read_parquet(run_dir / "matched_catalog.parquet"), inputs["target"])
    rows = []
    with tempfile.TemporaryDirectory() as scratch:  # the runs go to a throw-away MLflow store
        tracker = Tracker(f"sqlite:///{scratch}/mlflow.db", f"{scratch}/artifacts", "bench-architectures")
        recorder = Recorder(tracker, {}, Path(scratch), log=lambda line: None)
        for architecture in args.architectures:
            # The pipeline's own protocol and settings, with `full` fine-tuning only.
            profile = dataclasses.replace(load_project(args.profile).profile, architecture=architecture, seeds=tuple(args.seeds),
                                          strategies=("full",), adaptation_strategies=())
            for task in args.tasks:
                pretrained = pretrain(profile, task, data, "sdss", recorder)
                speed = tracker.client.get_run(pretrained["run_id"]).data.metrics["train_images_per_second"]
                tuned = finetune(profile, task, str(args.budget), data, pretrained, "des", recorder)
                row = {"task": task, "architecture": architecture,
                       "gflop_per_image": round(count_flops(build_model(architecture)) / 1e9, 3),
                       "train_images_per_second": round(speed, 1), "epochs": pretrained["epochs"],
                       "source_val_accuracy": round(pretrained["source_val"]["accuracy"], 3),
                       "direct_accuracy": round(pretrained["target_test_direct"]["accuracy"], 3),
                       "direct_roc_auc": round(pretrained["target_test_direct"]["roc_auc"], 3),
                       f"full_{args.budget}_accuracy": round(tuned.accuracy.mean(), 3),
                       f"full_{args.budget}_roc_auc": round(tuned.roc_auc.mean(), 3)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    print(f"\n{args.profile}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print(table.to_markdown(index=False))
    # For bench/run.py's table: per task, "compact a / b vs ds18 c / d" (direct / fine-tuned, mean over seeds).
    means = table.groupby(["task", "architecture"])[["direct_accuracy", f"full_{args.budget}_accuracy"]].mean()
    summary = {task: " vs ".join(f"{a} {means.loc[(task, a)].iloc[0]:.3f} / {means.loc[(task, a)].iloc[1]:.3f}"
                                 for a in args.architectures) for task in args.tasks}
    out = Path(__file__).parent / "results" / f"architectures-{args.profile}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"profile": args.profile, "budget": args.budget, "seeds": args.seeds,
                               "machine": machine_info(), "rows": rows, "accuracy_summary": summary}, indent=1))


if __name__ == "__main__":
    main()
