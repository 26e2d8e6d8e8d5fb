"""The model inputs of the same simulated SDSS spirals under each run's realism effects, above
real GZ2 spirals: what the network sees, side by side. Read from finished runs of `gz2_spirals_whole_frame`
and its `bench/realism/gz2_*.yaml` variants (one sky seed, so the same galaxies in every run);
the real row comes from the first run's target.

    .venv/bin/python bench/realism/inputs_figure.py --out docs/sim_vs_real_gz2_galaxies.png \\
        none=/tmp/gz2/data/gz2_spirals_whole_frame arms=/tmp/abl_arms/data/gz2_realism_continuous_arms

The simulated galaxies are the brightest that the volunteers labelled spiral and that every run
made an input of; the real ones are the first labelled spiral in the folder's catalogue.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is not part of the package

from galpipe.preprocessing import MODEL_INPUT_PIXELS  # noqa: E402


def inputs(run_dir: Path, role: str) -> tuple[pd.DataFrame, np.ndarray]:
    """(index of the usable inputs, by object_id; the stacked array) of a run's source or target."""
    index = pd.read_parquet(run_dir / role / "model_inputs.parquet")
    array = np.load(run_dir / role / f"model_inputs_{MODEL_INPUT_PIXELS}px.npy", mmap_mode="r")
    return index[index.status == "ok"].set_index("object_id"), array


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="name=run_dir (data/<project>), the first is the reference")
    parser.add_argument("--n", type=int, default=6, help="galaxies per row")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()
    runs = [(name, Path(folder)) for name, folder in (run.split("=", 1) for run in args.runs)]
    sources = {name: inputs(folder, "source") for name, folder in runs}
    catalog = pd.read_parquet(runs[0][1] / "source" / "catalog.parquet")
    usable = set.intersection(*(set(index.index) for index, _ in sources.values()))
    spirals = catalog[(catalog.spiral == 1) & catalog.object_id.isin(usable)].nsmallest(args.n, "mag_r").object_id
    target_catalog = pd.read_parquet(runs[0][1] / "target" / "catalog.parquet")
    target_index, target_array = inputs(runs[0][1], "target")
    real = target_catalog[(target_catalog.spiral == 1) & target_catalog.object_id.isin(target_index.index)]
    rows = [(f"simulated SDSS, {name}", [array[index.loc[i, "row"]] for i in spirals])
            for name, (index, array) in sources.items()]
    rows.append(("real GZ2 spirals", [target_array[target_index.loc[i, "row"]] for i in real.object_id[:args.n]]))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), args.n, figsize=(1.6 * args.n, 1.75 * len(rows)), squeeze=False)
    for (label, images), row_axes in zip(rows, axes, strict=True):
        for k, ax in enumerate(row_axes):
            ax.set_axis_off()
            if k < len(images):
                ax.imshow(np.clip(np.moveaxis(np.asarray(images[k]), 0, -1), 0, 1))
        row_axes[0].set_title(label, loc="left", fontsize=9)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}: {len(rows)} rows of {args.n}")


if __name__ == "__main__":
    main()
