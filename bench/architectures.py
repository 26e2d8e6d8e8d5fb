"""ds18 (the paper's CNN) against compact (galpipe's default) on one profile's data, side by side
in one run: FLOPs, training speed, SDSS validation accuracy, DES test accuracy applied directly
and after `full` fine-tuning on N DES labels, per task, with the pipeline's own settings.
Run from the repository root after `make run` (it reads data/<profile>/):

    .venv/bin/python bench/architectures.py --profile small --budget 300 --seeds 0
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import pandas as pd
import torch

from galpipe.evaluation import binary_metrics
from galpipe.hardware import machine_info
from galpipe.models import build_model, count_flops
from galpipe.preprocessing import load_model_inputs
from galpipe.profiles import get_profile
from galpipe.training import TrainConfig, predict_proba, train_classifier
from galpipe.transfer import choose_budget, labelled_sample, split_by_hash, split_train_validation

SOURCE_VALIDATION_FRACTION = 0.15  # as galpipe.defs.model_assets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="small")
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tasks", nargs="+", default=["featured", "edge_on", "bar"])
    parser.add_argument("--architectures", nargs="+", default=["compact", "ds18"])
    args = parser.parse_args()
    profile = get_profile(args.profile)
    run_dir = f"data/{args.profile}"
    source = pd.read_parquet(f"{run_dir}/source/catalog.parquet")
    source_index = pd.read_parquet(f"{run_dir}/source/model_inputs.parquet")
    matched = pd.read_parquet(f"{run_dir}/matched_catalog.parquet")
    target_index = pd.read_parquet(f"{run_dir}/target/model_inputs.parquet")
    x_source = load_model_inputs(f"{run_dir}/source/model_inputs_69px.npy")
    x_target = load_model_inputs(f"{run_dir}/target/model_inputs_69px.npy")
    rows = []
    for task in args.tasks:
        weighting = "balanced" if task in profile.class_balanced_tasks else "none"
        sample = labelled_sample(source, source_index, task)
        train, validation = split_by_hash(sample, SOURCE_VALIDATION_FRACTION, salt="source-validation")
        test = labelled_sample(matched[matched.split == "test"], target_index, task)
        pool = labelled_sample(matched[matched.split == "pool"], target_index, task)
        for seed in args.seeds:
            for architecture in args.architectures:
                model = build_model(architecture, seed=seed)
                started = time.perf_counter()
                history = train_classifier(model, x_source, train.row, train.label, validation.row, validation.label,
                                           TrainConfig(max_epochs=profile.pretrain_max_epochs, patience=profile.patience,
                                                       batch_size=profile.batch_size, seed=seed,
                                                       class_weighting=weighting))
                images_per_second = len(train) * len(history) / (time.perf_counter() - started)
                source_val = binary_metrics(validation.label, predict_proba(model, x_source[validation.row]))
                direct = binary_metrics(test.label, predict_proba(model, x_target[test.row]))
                chosen = choose_budget(pool, args.budget, seed)
                fine_train, fine_validation = split_train_validation(chosen, seed)
                tuned = copy.deepcopy(model)
                train_classifier(tuned, x_target, fine_train.row, fine_train.label, fine_validation.row,
                                 fine_validation.label,
                                 TrainConfig(max_epochs=profile.finetune_max_epochs, patience=profile.patience,
                                             batch_size=profile.batch_size, seed=seed, learning_rate=3e-4,
                                             min_steps=profile.finetune_min_steps, class_weighting=weighting))
                finetuned = binary_metrics(test.label, predict_proba(tuned, x_target[test.row]))
                row = {"task": task, "seed": seed, "architecture": architecture,
                       "gflop_per_image": round(count_flops(build_model(architecture)) / 1e9, 3),
                       "train_images_per_second": round(images_per_second, 1), "epochs": len(history),
                       "source_val_accuracy": round(source_val["accuracy"], 3),
                       "direct_accuracy": round(direct["accuracy"], 3), "direct_roc_auc": round(direct["roc_auc"], 3),
                       f"full_{args.budget}_accuracy": round(finetuned["accuracy"], 3),
                       f"full_{args.budget}_roc_auc": round(finetuned["roc_auc"], 3)}
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
