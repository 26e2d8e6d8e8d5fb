"""How much galpipe's compiled resampler moves the probabilities of trained models against
torch's antialiased bilinear (galpipe's resampler before 2026-11-28): each task's champion of a
finished `galpipe run --profile small`, on that run's DES target cutouts, with the inputs made
both ways and everything else the same.

    .venv/bin/python bench/resampler_delta_p.py RUN_FOLDER --out bench/results/resampler_delta_p.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not part of the package

from galpipe import preprocessing  # noqa: E402
from galpipe.cutouts import read_cutouts  # noqa: E402
from galpipe.hardware import machine_info  # noqa: E402
from galpipe.prediction import list_cutouts, load_classifier, model_uris  # noqa: E402
from galpipe.training import predict_proba  # noqa: E402


def torch_resample_into(pixels: np.ndarray, out: np.ndarray, box=None) -> np.ndarray:
    """galpipe.resampling.resample_into as torch's kernel does it."""
    top, left, height, width = box or (0, 0, *pixels.shape[1:])
    field = torch.from_numpy(np.ascontiguousarray(pixels[:, top:top + height, left:left + width], np.float32))
    out[:] = F.interpolate(field[None], size=out.shape[1:], mode="bilinear", antialias=True, align_corners=False)[0]
    return out


def model_inputs_of(paths: list[str]) -> np.ndarray:
    made = []
    for start in range(0, len(paths), preprocessing.BATCH_CUTOUTS):
        stack, errors = preprocessing.stacked_model_inputs(read_cutouts(paths[start:start + preprocessing.BATCH_CUTOUTS]),
                                                           40.0, "bands")
        if any(errors):
            raise SystemExit(f"unusable cutouts: {[e for e in errors if e]}")
        made.append(stack)
    return np.concatenate(made)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the folder `galpipe run --profile small` ran in")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    tracking_uri = f"sqlite:///{args.run.resolve()}/mlruns/mlflow.db"
    paths = list(list_cutouts(folder=str(args.run / "data/small/target/cutouts")).path)
    compiled = model_inputs_of(paths)
    preprocessing.resample_into = torch_resample_into  # what _made_by_shape calls
    by_torch = model_inputs_of(paths)
    difference = np.abs(compiled - by_torch)
    lines = [f"Machine: {machine_info()['cpu']}; commit {machine_info()['commit']}; run {args.run}.", "",
             f"{len(paths)} DES cutouts (40\", bands). Model inputs, compiled against torch: largest difference "
             f"{difference.max():.2e} (inputs span {np.ptp(by_torch):.2f}); median over images of each image's largest "
             f"{np.median(difference.reshape(len(paths), -1).max(axis=1)):.2e}.", "",
             "| task (champion) | largest delta p | mean delta p | classes changed at 0.5 |", "|---|---|---|---|"]
    for uri in model_uris("champion", ["featured", "edge_on", "bar"], "des", "galpipe-small"):
        classifier = load_classifier(tracking_uri, uri)
        p_compiled, p_torch = (predict_proba(classifier.module, x) for x in (compiled, by_torch))
        delta = np.abs(p_compiled - p_torch)
        changed = int(((p_compiled >= 0.5) != (p_torch >= 0.5)).sum())
        lines.append(f"| {classifier.task} | {delta.max():.1e} | {delta.mean():.1e} | {changed} of {len(delta)} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
