"""`galpipe predict` from stored cutouts against the bare model on in-memory tensors, side by side
(rounds alternate, median), on synthetic DES-like cutouts this script writes ((3, 153, 153)
float32 with a WCS: reading speed does not depend on what the pixels show), stored two ways: one
FITS file per galaxy (as users may bring them) and stacks of 256 (as galpipe stores a survey's own,
galpipe.cutouts). Also the per-file read time of astropy (the reader before fitsio) against fitsio
(galpipe's reader now), and the read time of a galaxy from a stack.

    .venv/bin/python bench/predict_reader.py --n 2000 --out bench/results/predict_reader

Writes `<out>.json` and `<out>.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is not part of the package

from bench.run import side_by_side  # noqa: E402
from galpipe.cutouts import read_cutout, write_cutout_fits, write_cutout_stack  # noqa: E402
from galpipe.hardware import machine_info  # noqa: E402
from galpipe.models import build_model  # noqa: E402
from galpipe.prediction import Classifier, list_cutouts, predict_cutouts  # noqa: E402

SIZE_PIXELS, PIXEL_SCALE_ARCSEC = 153, 0.263
GALAXIES_PER_STACK = 256  # as the simulated surveys store a big catalogue (galpipe.sources.simulated)


def write_cutouts(folder: Path, stack_folder: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:SIZE_PIXELS, :SIZE_PIXELS] - SIZE_PIXELS // 2
    galaxy = np.exp(-np.hypot(x, y) / 6.0).astype(np.float32)
    cubes, ids, ra_deg = [], [], []
    for k in range(n):
        pixels = galaxy[None] * rng.uniform(50, 500, (3, 1, 1)) + rng.normal(0, 3, (3, SIZE_PIXELS, SIZE_PIXELS))
        cubes.append(pixels.astype(np.float32))
        ids.append(f"des_{k:06d}")
        ra_deg.append(30.0 + k * 1e-3)
        write_cutout_fits(folder / f"{ids[-1]}.fits", cubes[-1], "gri", ra_deg[-1], 0.5,
                          PIXEL_SCALE_ARCSEC, {"SURVEY": "des", "MAGZERO": 30.0})
    for start in range(0, n, GALAXIES_PER_STACK):
        chunk = slice(start, start + GALAXIES_PER_STACK)
        write_cutout_stack(stack_folder / f"cutouts-{start // GALAXIES_PER_STACK:05d}.stack.fits", ids[chunk],
                           cubes[chunk], "gri", ra_deg[chunk], [0.5] * len(ids[chunk]), PIXEL_SCALE_ARCSEC,
                           {"SURVEY": "des", "MAGZERO": 30.0})


def astropy_read(path: Path) -> None:
    """The reader galpipe used before fitsio (galpipe.cutouts at commit 28ba1ef)."""
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        hdul.verify("exception")
        hdu = next(h for h in hdul if h.data is not None and h.is_image)
        np.asarray(hdu.data, dtype=np.float32)
        hdu.header.copy()


def timed(items: int, call):
    def run():
        started = time.perf_counter()
        call()
        return items, time.perf_counter() - started
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="cutouts to write and classify")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()
    model = build_model("compact", seed=0).eval()
    classifier = Classifier("bench", "bench", model)
    workers = 2  # reader processes, against the default (threads that each read and classify)
    with tempfile.TemporaryDirectory(prefix="galpipe-predict-") as scratch:
        folder, stack_folder = Path(scratch) / "cutouts", Path(scratch) / "stacks"
        folder.mkdir()
        stack_folder.mkdir()
        write_cutouts(folder, stack_folder, args.n)
        cutouts = list_cutouts(folder=str(folder))
        stacked = list_cutouts(folder=str(stack_folder))
        assert list(stacked.object_id) == list(cutouts.object_id)
        paths = sorted(folder.glob("*.fits"))[:500]
        x = torch.from_numpy(np.random.default_rng(1).normal(size=(args.n, 3, 69, 69)).astype(np.float32))

        def bare(batch: int):
            with torch.no_grad():
                for start in range(0, len(x), batch):
                    model(x[start:start + batch])

        out = Path(scratch) / "morphology.parquet"
        rates = side_by_side({
            # Batches of 256 as measured before; of 64, whose activations stay in cache (the faster is the baseline).
            "bare_model_in_memory": timed(len(x), lambda: bare(256)),
            "bare_model_in_memory_batches_of_64": timed(len(x), lambda: bare(64)),
            "galpipe_predict_stacks": timed(len(stacked), lambda: predict_cutouts(
                [classifier], stacked, out, progress=False)),
            "galpipe_predict_stacks_1_thread": timed(len(stacked), lambda: predict_cutouts(
                [classifier], stacked, out, progress=False, threads=1)),
            f"galpipe_predict_stacks_{workers}_readers": timed(len(stacked), lambda: predict_cutouts(
                [classifier], stacked, out, progress=False, workers=workers)),
            "galpipe_predict_fits": timed(len(cutouts), lambda: predict_cutouts(
                [classifier], cutouts, out, progress=False)),
            f"galpipe_predict_fits_{workers}_readers": timed(len(cutouts), lambda: predict_cutouts(
                [classifier], cutouts, out, progress=False, workers=workers)),
            "read_astropy_1_process": timed(len(paths), lambda: [astropy_read(p) for p in paths]),
            "read_fitsio_1_process": timed(len(paths), lambda: [read_cutout(p) for p in paths]),
            # Each galaxy from its stack (memory-mapped; the page cache holds these files, as it holds the single ones).
            "read_from_stacks_1_process": timed(len(stacked), lambda: [read_cutout(p) for p in stacked.path]),
        }, args.rounds)
    bare_rate = max(rates["bare_model_in_memory"], rates["bare_model_in_memory_batches_of_64"])
    results = {"machine": machine_info(), "n_cutouts": args.n, "workers": workers, "images_per_second": rates,
               "threads": torch.get_num_threads(),
               "predict_vs_bare": round(rates["galpipe_predict_fits"] / bare_rate, 3),
               "predict_stacks_vs_bare": round(rates["galpipe_predict_stacks"] / bare_rate, 3),
               "threads_vs_1_thread": round(rates["galpipe_predict_stacks"] / rates["galpipe_predict_stacks_1_thread"], 2),
               "fitsio_vs_astropy_read": round(rates["read_fitsio_1_process"] / rates["read_astropy_1_process"], 2)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(results, indent=1))
    lines = [f"Machine: {results['machine']['cpu']}, {os.cpu_count()} CPUs; commit {results['machine']['commit']}; "
             f"{args.n} synthetic DES FITS cutouts "
             f"({SIZE_PIXELS}x{SIZE_PIXELS}x3), `compact`; median of {args.rounds} alternating rounds.", "",
             "| what | images/s |", "|---|---|"]
    lines += [f"| {name} | {rate:,.0f} |" for name, rate in rates.items()]
    lines += ["", f"`galpipe predict` as it runs by default ({results['threads']} threads that each read and classify) "
                  "/ bare model (the faster batch size): "
                  f"from stacks {results['predict_stacks_vs_bare']:.2f}, from one file per galaxy "
                  f"{results['predict_vs_bare']:.2f}; {results['threads']} threads / 1 thread (from stacks): "
                  f"{results['threads_vs_1_thread']:.2f}x; fitsio / astropy per-file read: "
                  f"{results['fitsio_vs_astropy_read']:.1f}x"]
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
