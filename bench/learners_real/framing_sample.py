"""Does a tighter frame help on the real spirals? Galaxy Zoo 2's JPEGs show 8.48 x each galaxy's
Petrosian R90 across 424 pixels; resampled whole to 69x69, the galaxy (R90 across ~16 pixels)
keeps little of its arms. This writes a `bench/learners.py` sample whose pool images are the
central FRACTION of each JPEG, resampled to 69x69 the way galpipe does (`central_square`, then
`resample`), so learners can be compared per frame on the development split alone:

    .venv/bin/python bench/learners_real/framing_sample.py RUN_DIR 0.5 /tmp/frame050.npz
    .venv/bin/python bench/learners.py /tmp/frame050.npz --starts scratch --out /tmp/frame050

RUN_DIR is a `gz2_spirals` run's data folder (its matched catalogue says which galaxies form the
pool; the test galaxies are left out). The simulated source is not re-framed, so only `scratch`
answers the question.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from galpipe.cutouts import read_cutout  # noqa: E402
from galpipe.preprocessing import _centred, central_square, resample  # noqa: E402


def framed_pool(run_dir: Path, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The pool's images (uint8, in the order bench/learners.py's export uses) and labels."""
    matched = pd.read_parquet(run_dir / "matched_catalog.parquet")
    index = pd.read_parquet(run_dir / "target" / "model_inputs.parquet")
    pool = (matched[matched.split == "pool"].merge(index[index.status == "ok"], on="object_id")
            .sort_values("row"))
    images = []
    for path in pool.cutout_path:
        square = central_square(read_cutout(path).pixels)
        images.append(resample(_centred(square, round(square.shape[-1] * fraction))))
    quantised = np.round(np.clip(np.stack(images), 0, 1) * 255).astype(np.uint8)
    return quantised, pool.spiral.to_numpy(np.int64)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("fraction", type=float, help="of each image's side, centred (1: the whole image)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--source-from", default="bench/learners_sample.npz",
                        help="a sample whose simulated source is copied unchanged")
    args = parser.parse_args(argv)
    pool_x, pool_y = framed_pool(args.run_dir, args.fraction)
    source = np.load(args.source_from)
    np.savez_compressed(args.out, pool_x=pool_x, pool_y=pool_y, source_x=source["source_x"], source_y=source["source_y"])
    print(f"{args.out}: {len(pool_y)} pool galaxies, the central {args.fraction:g} of each image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
