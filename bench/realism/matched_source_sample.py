"""Does the simulation transfer better when its spirals are not the big, bright galaxies? In the
simulated SDSS the volunteers see arms mostly in large, bright galaxies (README, "Why the
simulation-trained model ranks real spirals below chance"), so size and brightness, and the frame
edge and sky noise that follow from them, tell simulated spirals apart, and point the wrong way on
the real pool. This writes a `bench/learners.py` sample whose simulated source keeps, in each cell
of Petrosian R90 by r magnitude (quintiles of each), as many spirals as non-spirals (the fewer of
the two, drawn with a fixed seed): both classes then have the same size and brightness
distribution. The real pool is copied unchanged. A prototype on the development split, before any
change to galpipe's simulation:

    .venv/bin/python bench/realism/matched_source_sample.py RUN_DIR SAMPLE.npz OUT.npz
    .venv/bin/python bench/learners.py OUT.npz --starts simulation --epochs 100 --seeds 2 \\
        --budgets 25,50,100,300,all --learners "compact, one-cycle, galaxy aug." --label "..." --out ...

RUN_DIR is the data folder of the run SAMPLE.npz was exported from (bench/learners.py --export).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

BINS = 5  # quintiles of R90 and of r magnitude: 25 cells
SEED = 2026


def source_catalog_in_sample_order(run_dir: Path) -> pd.DataFrame:
    """The simulated source galaxies in the order of the sample's source_x (as export() writes it)."""
    catalog = pd.read_parquet(run_dir / "source" / "catalog.parquet")
    index = pd.read_parquet(run_dir / "source" / "model_inputs.parquet")
    labelled = index[index.status == "ok"].merge(catalog, on="object_id")
    return labelled.sort_values("row").reset_index(drop=True)


def matched_rows(catalog: pd.DataFrame, seed: int = SEED, by_cell: bool = True) -> np.ndarray:
    """Rows kept: per cell of R90 x magnitude quintiles, equal numbers of each class; or, with
    `by_cell` False (the control), the same number of each class drawn from the whole catalogue."""
    rng = np.random.default_rng(seed)
    y = catalog.spiral.to_numpy()
    if not by_cell:
        n_per_class = len(matched_rows(catalog, seed)) // 2
        return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == k), n_per_class, replace=False) for k in (0, 1)]))
    cells = (pd.qcut(catalog.petro_r90_arcsec, BINS, labels=False) * BINS
             + pd.qcut(catalog.mag_r, BINS, labels=False)).to_numpy()
    kept = []
    for cell in np.unique(cells):
        spirals, others = (np.flatnonzero((cells == cell) & (y == k)) for k in (1, 0))
        n = min(len(spirals), len(others))
        kept += [rng.choice(spirals, n, replace=False), rng.choice(others, n, replace=False)]
    return np.sort(np.concatenate(kept))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("sample", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--control", action="store_true",
                        help="as many galaxies of each class, drawn regardless of size and brightness")
    args = parser.parse_args(argv)
    sample = dict(np.load(args.sample))
    catalog = source_catalog_in_sample_order(args.run_dir)
    if not np.array_equal(catalog.spiral.to_numpy(np.int64), sample["source_y"]):
        raise SystemExit(f"{args.sample}: its source labels are not {args.run_dir}'s, in export order")
    rows = matched_rows(catalog, by_cell=not args.control)
    y = catalog.spiral.to_numpy()
    for name, chosen in (("all", np.arange(len(catalog))), ("control" if args.control else "matched", rows)):
        print(f"{name}: {len(chosen)} simulated galaxies, {y[chosen].mean():.2f} spiral; ROC AUC of R90 "
              f"{roc_auc_score(y[chosen], catalog.petro_r90_arcsec.to_numpy()[chosen]):.3f}, of r magnitude "
              f"{roc_auc_score(y[chosen], catalog.mag_r.to_numpy()[chosen]):.3f}")
    np.savez_compressed(args.out, **{**sample, "source_x": sample["source_x"][rows], "source_y": sample["source_y"][rows]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
