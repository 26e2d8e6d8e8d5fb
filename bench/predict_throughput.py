"""Throughput of `galpipe predict` (galaxies per second, reading included) on two inputs:
the DES FITS cutouts of a profile with that profile's champions, and the real DECaLS PNG sample
with a colour-mode model (an untrained `compact`, registered in a temporary store: speed does not
depend on the weights). Run from the repository root after `make run`:

    .venv/bin/python bench/predict_throughput.py --profile small
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from galpipe.models import build_model
from galpipe.prediction import list_cutouts, load_classifier, model_uris, predict_cutouts
from galpipe.tracking import Tracker

DECALS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gz_decals_rings"


def timed(classifiers, cutouts, out, **options) -> dict:
    started = time.perf_counter()
    summary = predict_cutouts(classifiers, cutouts, out, progress=False, **options)
    seconds = time.perf_counter() - started
    return {"n_galaxies": len(cutouts), "n_written": summary.n_written, "n_failed": len(summary.failures),
            "seconds": round(seconds, 2), "galaxies_per_second": round(len(cutouts) / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="small")
    args = parser.parse_args()
    results = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                           "python": platform.python_version(), "torch": torch.__version__}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        champions = [load_classifier("sqlite:///mlruns/mlflow.db", uri)
                     for uri in model_uris("champion", ["featured", "edge_on", "bar"], "des", "galpipe-small")]
        des = list_cutouts(folder=f"data/{args.profile}/target/cutouts")
        results["des_fits_3_champions"] = timed(champions, des, tmp / "des.parquet")

        tracker = Tracker(f"sqlite:///{tmp}/mlflow.db", str(tmp / "artifacts"), "bench")
        with tracker.run("colour", {}, {}) as run_id:
            uri = tracker.log_and_register_model(run_id, build_model("compact", seed=0),
                                                    np.zeros((1, 3, 69, 69), np.float32), "bench-ring",
                                                    {"task": "ring", "input_mode": "colour", "field_arcsec": 40}).uri
        colour = [load_classifier(f"sqlite:///{tmp}/mlflow.db", uri)]
        decals = list_cutouts(catalog=str(DECALS / "catalog.csv"), id_column="iauname", image_column="image")
        results["decals_png_1_model"] = timed(colour, decals, tmp / "decals.parquet", pixel_scale_arcsec=0.262)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
