"""input_statistics.py's measures (brightness in rings, the centre's colour, the sky noise) of the
model inputs of spirals and of the rest, simulated and real, read from finished runs of
`gz2_spirals_whole_frame` and its `bench/realism/gz2_*.yaml` variants: how far each run's simulated spirals
are from real ones. The real galaxies are those of the labelled *pool* only (matched_catalog's
split "pool"), never the test galaxies the README reports.

    .venv/bin/python bench/realism/spiral_statistics.py --out bench/results/realism_spiral_statistics \\
        none=/tmp/gz2/data/gz2_spirals_whole_frame galaxies=/tmp/abl_galaxies/data/gz2_realism_galaxies

Writes `<out>.json` and `<out>.md`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is not part of the package

from bench.realism.input_statistics import CENTRE_PX, EDGE_PX, RINGS_PX, statistics  # noqa: E402
from galpipe.preprocessing import MODEL_INPUT_PIXELS  # noqa: E402


def labelled_inputs(run_dir: Path, role: str, labels: pd.DataFrame) -> dict[str, np.ndarray]:
    """The inputs of `role` (source or target) of the galaxies labelled spiral and not in `labels`
    (object_id, spiral)."""
    index = pd.read_parquet(run_dir / role / "model_inputs.parquet")
    index = index[index.status == "ok"].merge(labels, on="object_id")
    array = np.load(run_dir / role / f"model_inputs_{MODEL_INPUT_PIXELS}px.npy", mmap_mode="r")
    return {kind: np.asarray(array[np.sort(index.row[index.spiral == value].to_numpy())])
            for kind, value in (("spirals", 1), ("the rest", 0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="name=run_dir (data/<project>); the real pool is the first run's")
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()
    runs = [(name, Path(folder)) for name, folder in (run.split("=", 1) for run in args.runs)]
    rows = {}
    for name, run_dir in runs:
        catalog = pd.read_parquet(run_dir / "source" / "catalog.parquet")[["object_id", "spiral"]]
        for kind, inputs in labelled_inputs(run_dir, "source", catalog).items():
            rows[f"simulated SDSS, {name}: {kind}"] = {**statistics(inputs), "n": len(inputs)}
    matched = pd.read_parquet(runs[0][1] / "matched_catalog.parquet")
    pool = matched[matched.split == "pool"][["object_id", "spiral"]]
    for kind, inputs in labelled_inputs(runs[0][1], "target", pool).items():
        rows[f"real GZ2 pool: {kind}"] = {**statistics(inputs), "n": len(inputs)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps({"rings_px": RINGS_PX, "rows": rows}, indent=1))
    rings = ", ".join(f"{a}-{b}" for a, b in RINGS_PX)
    lines = [f"| model inputs | galaxies | mean brightness in rings of {rings} px | centre R, G, B (r < {CENTRE_PX} px) "
             f"| sky noise (r >= {EDGE_PX} px) |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {row['n']} | {', '.join(map(str, row['ring_brightness']))} | "
              f"{', '.join(map(str, row['centre_rgb']))} | {row['edge_noise']} |" for name, row in rows.items()]
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
