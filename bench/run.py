"""galpipe's benchmark suite: every figure measured side by side in one run and quoted as a
ratio, with the machine it ran on. Writes `<out>.json` and `<out>.md`. From the repository root:

    make bench                     # = .venv/bin/python bench/run.py --profile small

Sections (each against the goals of issue 5):
- machine: CPU, SIMD flags, threads, torch; sgemm GFLOP/s in fp32 and bf16 (the roofline);
- training: galpipe's `train_classifier` (augmentation, validation, checkpoints) on the
  consolidated memory-mapped array and on an in-memory array, against a bare PyTorch loop of the
  same model on in-memory tensors (fp32, NCHW) and against the bare loop's best settings;
- precision: test accuracy of the same training in fp32 and in bf16 autocast;
- inference: galpipe's `predict_proba` and `galpipe predict` (the survey's stored cutouts, stacks
  since they replaced one FITS file per galaxy; 1 and all worker processes) against a bare
  `model(x)` loop, and achieved GFLOP/s against sgemm;
- data: galaxies rendered per second per core; cutouts loaded per second from the array and
  from the stored cutouts (the `fits_*` keys of results before stacks);
- pipeline: from the last `galpipe run` of each profile (data/<profile>/run_timings.json and its
  MLflow runs): end-to-end wall time, and Dagster + MLflow time per fine-tuning partition
  against the training time in it; the batch prediction asset's galaxies per second;
- architectures: compact against ds18, FLOPs and throughput here, test accuracy from
  bench/architectures.py's last result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is not part of the package

from galpipe.evaluation import binary_metrics  # noqa: E402
from galpipe.hardware import channels_last, machine_info, resolve_precision  # noqa: E402
from galpipe.models import build_model, count_flops  # noqa: E402
from galpipe.prediction import Classifier, list_cutouts, predict_cutouts  # noqa: E402
from galpipe.preprocessing import load_model_inputs, model_input  # noqa: E402
from galpipe.training import TrainConfig, predict_proba, train_classifier  # noqa: E402

GOALS = {"training_vs_bare_fp32": 1.5, "inference_vs_bare_fp32": 2.0, "memmap_vs_in_memory": 0.95,
         "overhead_fraction": 0.10, "small_profile_seconds": 600, "paper_profile_seconds": 3600}


def side_by_side(candidates: dict, rounds: int) -> dict:
    """Run each candidate once per round, in turn, so that a noisy neighbour slows them alike.
    Each candidate returns (items, seconds); the result is the median items per second."""
    rates = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            items, seconds = run()
            rates[name].append(items / seconds)
    return {name: round(statistics.median(r), 1) for name, r in rates.items()}


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def sgemm(dtype, n: int = 2048, reps: int = 8) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    return round(2 * n**3 * reps / timed(lambda: [a @ b for _ in range(reps)]) / 1e9, 1)


# --- training ---------------------------------------------------------------------------------

def bare_training(architecture: str, x: torch.Tensor, y: torch.Tensor, batch_size: int, fast: bool):
    """The reference: Adam on in-memory tensors, no augmentation, no validation, nothing logged.
    `fast`: channels_last, and bf16 autocast where the CPU has native bf16."""
    def run():
        model = build_model(architecture, seed=0).train()
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        precision = resolve_precision("auto", "cpu") if fast else "fp32"
        if fast:
            model = model.to(memory_format=torch.channels_last)
        started = time.perf_counter()
        for start in range(0, len(x), batch_size):
            inputs = x[start:start + batch_size]
            inputs = channels_last(inputs) if fast else inputs
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(inputs).float()
            loss = F.binary_cross_entropy_with_logits(logits, y[start:start + batch_size])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        return len(x), time.perf_counter() - started
    return run


def galpipe_training(architecture: str, array, y: np.ndarray, n_validation: int, batch_size: int, workdir: Path):
    """galpipe's own training call, as the assets make it: augmentation, a validation pass and a
    checkpoint every epoch, on `array` (a memmap or an in-memory array)."""
    def run():
        model = build_model(architecture, seed=0)
        n_train = len(y) - n_validation
        config = TrainConfig(max_epochs=1, patience=10, batch_size=batch_size, seed=0, device="cpu")
        rows = np.arange(len(y))
        started = time.perf_counter()
        train_classifier(model, array, rows[:n_train], y[:n_train], rows[n_train:], y[n_train:], config,
                         workdir / f"{architecture}.pt")
        return n_train, time.perf_counter() - started
    return run


def training_section(array_path: Path, rounds: int, workdir: Path) -> dict:
    memmap = load_model_inputs(array_path)
    results = {}
    for architecture, n_images in (("compact", 2048), ("ds18", 320)):
        n_images = min(n_images, len(memmap))
        in_memory = np.array(memmap[:n_images])
        y = (np.arange(n_images) % 3 == 0).astype(np.int64)  # speed does not depend on the labels
        x_tensor, y_tensor = torch.from_numpy(in_memory), torch.from_numpy(y.astype(np.float32))
        n_validation = n_images // 8
        bare_x, bare_y = x_tensor[:n_images - n_validation], y_tensor[:n_images - n_validation]
        rates = side_by_side({
            "bare_fp32": bare_training(architecture, bare_x, bare_y, 64, fast=False),
            "bare_fast": bare_training(architecture, bare_x, bare_y, 64, fast=True),
            "galpipe_memmap": galpipe_training(architecture, memmap[:n_images], y, n_validation, 64, workdir),
            "galpipe_in_memory": galpipe_training(architecture, in_memory, y, n_validation, 64, workdir),
        }, rounds)
        results[architecture] = {
            "images_per_second": rates, "n_images": n_images, "batch_size": 64,
            "training_vs_bare_fp32": round(rates["galpipe_memmap"] / rates["bare_fp32"], 2),
            "training_vs_bare_fast": round(rates["galpipe_memmap"] / rates["bare_fast"], 2),
            "memmap_vs_in_memory": round(rates["galpipe_memmap"] / rates["galpipe_in_memory"], 3)}
    return results


def precision_section(run_dir: Path, task: str = "featured") -> dict:
    """The same compact training (seed 0, SDSS images) in fp32 and in bf16 autocast: test accuracy
    and ROC AUC of each on held-out SDSS galaxies."""
    from galpipe.transfer import labelled_sample, split_by_hash
    catalog_path = run_dir / "source" / "catalog.parquet"
    if not catalog_path.is_file():
        return {"skipped": f"{catalog_path} missing (run `make run` first)"}
    x = load_model_inputs(run_dir / "source" / "model_inputs_69px.npy")
    sample = labelled_sample(pd.read_parquet(catalog_path), pd.read_parquet(run_dir / "source" / "model_inputs.parquet"),
                             task)
    rest, test = split_by_hash(sample, 0.25, salt="bench-precision")
    train, validation = split_by_hash(rest, 0.15, salt="bench-validation")
    test = test.subset(np.argsort(test.row))
    results = {"task": task, "n_train": len(train), "n_test": len(test)}
    for precision in ("fp32", "bf16"):
        model = build_model("compact", seed=0)
        config = TrainConfig(max_epochs=8, patience=8, batch_size=64, seed=0, device="cpu", precision=precision)
        seconds = timed(lambda: train_classifier(model, x, train.row, train.label, validation.row,
                                                 validation.label, config))
        metrics = binary_metrics(test.label, predict_proba(model, x[test.row], precision=precision))
        results[precision] = {"test_accuracy": round(metrics["accuracy"], 4), "roc_auc": round(metrics["roc_auc"], 4),
                              "seconds": round(seconds, 1)}
    results["accuracy_difference"] = round(results["bf16"]["test_accuracy"] - results["fp32"]["test_accuracy"], 4)
    results["auto_uses"] = resolve_precision("auto", "cpu")
    return results


# --- inference --------------------------------------------------------------------------------

def bare_inference(model, x: torch.Tensor, batch_size: int = 256):
    def run():
        model.eval()
        started = time.perf_counter()
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                model(x[start:start + batch_size])
        return len(x), time.perf_counter() - started
    return run


def galpipe_inference(model, x: np.ndarray):
    def run():
        return len(x), timed(lambda: predict_proba(model, x))
    return run


def galpipe_predict(model, cutouts: pd.DataFrame, out: Path, threads: int | None):
    classifier = Classifier("bench", "bench", model)

    def run():
        seconds = timed(lambda: predict_cutouts([classifier], cutouts, out, progress=False, threads=threads))
        return len(cutouts), seconds
    return run


def inference_section(array_path: Path, cutouts_dir: Path, sgemm_fp32: float, rounds: int, workdir: Path) -> dict:
    memmap = load_model_inputs(array_path)
    results = {}
    cutouts = list_cutouts(folder=str(cutouts_dir)) if cutouts_dir.is_dir() else None
    for architecture, n_images in (("compact", 4096), ("ds18", 512)):
        x = np.array(memmap[:min(n_images, len(memmap))])
        model = build_model(architecture, seed=0).eval()
        candidates = {"bare_fp32": bare_inference(model, torch.from_numpy(x)),
                      "galpipe_predict_proba": galpipe_inference(model, x)}
        if cutouts is not None:
            files = cutouts.iloc[:min(len(cutouts), 2048 if architecture == "compact" else 512)]
            candidates["galpipe_predict_stored_1_thread"] = galpipe_predict(model, files, workdir / "p.parquet", 1)
            # The default: one thread per core, each reading and classifying a batch of its own.
            candidates["galpipe_predict_stored"] = galpipe_predict(model, files, workdir / "p.parquet", None)
        rates = side_by_side(candidates, rounds)
        gflop = count_flops(model) / 1e9
        achieved = rates["galpipe_predict_proba"] * gflop
        results[architecture] = {
            "images_per_second": rates, "gflop_per_image": round(gflop, 4),
            "inference_vs_bare_fp32": round(rates["galpipe_predict_proba"] / rates["bare_fp32"], 2),
            "achieved_gflop_per_second": round(achieved, 1),
            "fraction_of_sgemm_fp32": round(achieved / sgemm_fp32, 3)}
        if cutouts is not None:
            results[architecture]["predict_stored_vs_bare_fp32"] = round(
                rates["galpipe_predict_stored"] / rates["bare_fp32"], 3)
    return results


# --- data -------------------------------------------------------------------------------------

def data_section(array_path: Path, cutouts_dir: Path, workdir: Path, n_render: int) -> dict:
    """Rendering: the same number of galaxies in one process and over all cores, each from a cold
    start (GalSim warms its caches over the first few dozen galaxies, as the pipeline's do)."""
    from galpipe.prediction import list_cutouts
    from galpipe.project import load_project
    from galpipe.sources.simulated import render_cutouts, simulated_catalog
    catalog = simulated_catalog("des", load_project("small").profile.sky, "target", 23.5, volunteer_labels=False)
    cores = os.cpu_count() or 1
    render = {}
    for k, workers in enumerate(sorted({cores, 1}, reverse=True)):
        galaxies = catalog.iloc[k * n_render:(k + 1) * n_render]
        seconds = timed(lambda: render_cutouts(galaxies, "des", 40.0, workdir / f"render{workers}", n_workers=workers))
        render[f"{workers}_process"] = round(len(galaxies) / seconds, 1)
    results = {"render_des_galaxies_per_second": render, "n_rendered": n_render,
               "render_per_core": round(render[f"{cores}_process"] / cores, 1),
               "render_scaling_all_cores": round(render[f"{cores}_process"] / render["1_process"], 2)}
    memmap = load_model_inputs(array_path)
    rng = np.random.default_rng(0)
    batches = [np.sort(rng.choice(len(memmap), 64, replace=False)) for _ in range(64)]
    seconds = timed(lambda: [np.ascontiguousarray(memmap[b]) for b in batches])
    results["array_cutouts_per_second"] = round(64 * len(batches) / seconds)
    if cutouts_dir.is_dir():
        paths = list(list_cutouts(folder=str(cutouts_dir)).path[:300])  # galaxies of the survey's stacks
        seconds = timed(lambda: [model_input(p, 40.0, "bands") for p in paths])
        results["stored_cutouts_per_second_1_process"] = round(len(paths) / seconds, 1)
        results["array_vs_stored"] = round(results["array_cutouts_per_second"] / results["stored_cutouts_per_second_1_process"])
    return results


# --- pipeline ---------------------------------------------------------------------------------

def pipeline_section(profiles: list[str]) -> dict:
    """What the last `galpipe run` of each profile measured: its wall time, and per fine-tuning
    partition the time outside training (Dagster, MLflow logging and registering, evaluation).
    A profile given as `name=DIR` was run in the project folder DIR (e.g. a git worktree)."""
    from mlflow import MlflowClient
    results = {}
    for spec in profiles:
        profile, _, project = spec.partition("=")
        project = Path(project) if project else ROOT
        client = MlflowClient("sqlite:///" + str(project / "mlruns" / "mlflow.db"))
        path = project / "data" / profile / "run_timings.json"
        if not path.is_file():
            results[profile] = {"skipped": f"{path} missing: run `make run PROFILE={profile}`"}
            continue
        record = json.loads(path.read_text())
        overheads = []
        for step in record["steps"]:
            if not step["step"].startswith("finetuned_models[") or step["step"].endswith("|0]"):
                continue
            runs = client.search_runs(experiment_ids=[e.experiment_id for e in client.search_experiments()],
                                      filter_string=f"tags.`dagster.run_id` = '{step['dagster_run_id']}'")
            train = sum(r.data.metrics.get("train_seconds", 0.0) for r in runs)
            # The test evaluation is science, not Dagster or MLflow: timed by the Recorder since 2026-11-27.
            evaluate = sum(v for r in runs for k, v in r.data.metrics.items() if k.endswith("_evaluate_seconds"))
            if train > 0:
                overheads.append({"partition": step["step"], "seconds": step["seconds"],
                                  "train_seconds": round(train, 1), "evaluate_seconds": round(evaluate, 1),
                                  "overhead_fraction": round(1 - train / step["seconds"], 3),
                                  "dagster_mlflow_fraction": round(1 - (train + evaluate) / step["seconds"], 3)})
        # target/morphology: its name before the asset names became unique
        morphology = [s for s in record["steps"] if s["step"].startswith(("target_morphology", "target/morphology"))]
        n_target = _count_rows(project / "data" / profile / "target" / "morphology")
        results[profile] = {
            "seconds": record["seconds"], "finished_utc": record["finished_utc"], "cpu": record["machine"]["cpu"],
            "project": str(project),
            "steps_seconds": {s["step"]: s["seconds"] for s in record["steps"]},
            "finetune_partitions": overheads,
            "overhead_fraction_median": (round(statistics.median(o["overhead_fraction"] for o in overheads), 3)
                                         if overheads else None),
            "overhead_fraction_range": ([min(o["overhead_fraction"] for o in overheads),
                                         max(o["overhead_fraction"] for o in overheads)] if overheads else None),
            # What is neither training nor evaluation: Dagster's step, MLflow logging and registering, loading.
            "dagster_mlflow_fraction_median": (round(statistics.median(o["dagster_mlflow_fraction"] for o in overheads), 3)
                                               if overheads else None),
            "dagster_mlflow_fraction_max": (max(o["dagster_mlflow_fraction"] for o in overheads) if overheads else None),
            # Weighted by time: the share of all fine-tuning wall time spent outside training.
            "overhead_fraction_all_finetuning": (round(1 - sum(o["train_seconds"] for o in overheads)
                                                       / sum(o["seconds"] for o in overheads), 3) if overheads else None),
            "morphology_galaxies_per_second": (round(n_target / sum(s["seconds"] for s in morphology), 1)
                                               if morphology and n_target else None)}
    return results


def _count_rows(folder: Path) -> int:
    import pyarrow.parquet as pq
    return sum(pq.ParquetFile(p).metadata.num_rows for p in folder.glob("*.parquet")) if folder.is_dir() else 0


# --- report -----------------------------------------------------------------------------------

def markdown(results: dict) -> str:
    m, lines = results["machine"], []
    lines += [f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m['torch_threads']} torch threads, "
              f"{m['cpu_capability']}, native bf16: {m['native_bf16']}, torch {m['torch']}"
              + (f", GPU {m['gpu']}" if "gpu" in m else "") + f"; measured {results['finished_utc']}.",
              f"sgemm: {results['sgemm_gflop_per_second']['fp32']} GFLOP/s fp32, "
              f"{results['sgemm_gflop_per_second']['bf16']} GFLOP/s bf16.", "",
              "| figure | measured | goal |", "|---|---|---|"]
    row = lambda name, value, goal="": lines.append(f"| {name} | {value} | {goal} |")  # noqa: E731
    for arch, t in results["training"].items():
        r = t["images_per_second"]
        row(f"training {arch}: galpipe (memmap) / bare fp32 loop",
            f"{t['training_vs_bare_fp32']}x ({r['galpipe_memmap']:.0f} vs {r['bare_fp32']:.0f} img/s)", ">= 1.5x")
        row(f"training {arch}: galpipe / bare loop, channels_last (+bf16 if native)",
            f"{t['training_vs_bare_fast']}x ({r['bare_fast']:.0f} img/s bare)")
        row(f"training {arch}: memmap / in-memory array", f"{t['memmap_vs_in_memory']}", ">= 0.95")
    p = results["precision"]
    if "skipped" not in p:
        row(f"SDSS test accuracy, {p['task']}, compact: bf16 - fp32",
            f"{p['accuracy_difference']:+.4f} ({p['bf16']['test_accuracy']} vs {p['fp32']['test_accuracy']}; AUC "
            f"{p['bf16']['roc_auc']} vs {p['fp32']['roc_auc']}; training {p['bf16']['seconds']} vs "
            f"{p['fp32']['seconds']} s; `auto` uses {p['auto_uses']} here)", "~0")
    for arch, i in results["inference"].items():
        r = i["images_per_second"]
        row(f"inference {arch}: galpipe predict_proba / bare fp32 model(x)",
            f"{i['inference_vs_bare_fp32']}x ({r['galpipe_predict_proba']:.0f} vs {r['bare_fp32']:.0f} img/s)",
            ">= 2x")
        row(f"inference {arch}: achieved / sgemm fp32",
            f"{i['fraction_of_sgemm_fp32']:.1%} ({i['achieved_gflop_per_second']} GFLOP/s)")
        if "predict_stored_vs_bare_fp32" in i:
            row(f"`galpipe predict` {arch} on the survey's stored cutouts (stacks): 1 thread, one per core",
                f"{r['galpipe_predict_stored_1_thread']:.0f}, {r['galpipe_predict_stored']:.0f} galaxies/s "
                f"({i['predict_stored_vs_bare_fp32']}x bare model(x))", ">= 2x")
    d = results["data"]
    row("render DES galaxies (GalSim), per core", f"{d['render_per_core']}/s "
        f"(all cores {d['render_scaling_all_cores']}x one process)")
    row("cutouts loaded: consolidated array, the survey's stored cutouts (stacks; 1 process)",
        f"{d['array_cutouts_per_second']}/s, {d.get('stored_cutouts_per_second_1_process', 'n/a')}/s")
    for profile, p in results["pipeline"].items():
        if "skipped" in p:
            row(f"`galpipe run --profile {profile}`", p["skipped"])
            continue
        goal = GOALS.get(f"{profile}_profile_seconds")
        row(f"`galpipe run --profile {profile}` end to end", f"{p['seconds'] / 60:.1f} min ({p['finished_utc']})",
            f"<= {goal / 60:.0f} min" if goal else "")
        if p["overhead_fraction_median"] is not None:
            low, high = p["overhead_fraction_range"]
            row(f"{profile}: share of a fine-tuning partition outside training (evaluation included)",
                f"median {p['overhead_fraction_median']:.0%} (range {low:.0%}-{high:.0%}, "
                f"{len(p['finetune_partitions'])} partitions); {p['overhead_fraction_all_finetuning']:.0%} "
                "of all fine-tuning time", "")
            if p.get("dagster_mlflow_fraction_median") is not None:
                row(f"{profile}: Dagster + MLflow share of a fine-tuning partition (neither training nor evaluation)",
                    f"median {p['dagster_mlflow_fraction_median']:.0%}, at most {p['dagster_mlflow_fraction_max']:.0%}",
                    "<= 10%")
        if p["morphology_galaxies_per_second"]:
            row(f"{profile}: batch prediction asset target_morphology", f"{p['morphology_galaxies_per_second']} "
                "galaxies/s (Dagster runs included)")
    a = results["architectures"]
    row("compact vs ds18: GFLOP per image", f"{a['gflop']['compact']} vs {a['gflop']['ds18']}")
    if "accuracy" in a:
        for task, acc in a["accuracy"].items():
            row(f"compact vs ds18: {task} DES test accuracy (direct, full N={a['budget']})", acc)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="small", help="whose data to measure on (run `make run` first)")
    parser.add_argument("--pipelines", nargs="*", default=["small", "paper"],
                        help="profiles whose last run to report (name, or name=PROJECT_DIR)")
    parser.add_argument("--rounds", type=int, default=3, help="side-by-side rounds per figure (median)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "cpu"))
    args = parser.parse_args()
    run_dir = ROOT / "data" / args.profile
    array_path = run_dir / "target" / "model_inputs_69px.npy"
    if not array_path.is_file():
        sys.exit(f"bench: {array_path} missing: run `make run PROFILE={args.profile}` first")
    torch.manual_seed(0)
    results = {"machine": machine_info(), "profile": args.profile,
               "sgemm_gflop_per_second": {"fp32": sgemm(torch.float32), "bf16": sgemm(torch.bfloat16)}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sections = [
            ("training", lambda: training_section(array_path, args.rounds, tmp)),
            ("precision", lambda: precision_section(run_dir)),
            ("inference", lambda: inference_section(array_path, run_dir / "target" / "cutouts",
                                                    results["sgemm_gflop_per_second"]["fp32"], args.rounds, tmp)),
            ("data", lambda: data_section(array_path, run_dir / "target" / "cutouts", tmp, 600)),
            ("pipeline", lambda: pipeline_section(args.pipelines)),
        ]
        for name, section in sections:
            started = time.perf_counter()
            results[name] = section()
            print(f"bench: {name} done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    architectures = {"gflop": {a: round(count_flops(build_model(a)) / 1e9, 4) for a in ("compact", "ds18")}}
    previous = ROOT / "bench" / "results" / f"architectures-{args.profile}.json"
    if previous.is_file():
        measured = json.loads(previous.read_text())
        architectures["budget"] = measured.get("budget")
        architectures["accuracy"] = measured.get("accuracy_summary", {})
    results["architectures"] = architectures
    results["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    table = markdown(results)
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
