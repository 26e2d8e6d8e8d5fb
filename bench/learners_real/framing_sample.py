"""Does a tighter frame help on the real spirals? Galaxy Zoo 2's JPEGs show 8.48 x each galaxy's
Petrosian R90 across 424 pixels; resampled whole to 69x69, the galaxy (R90 across ~16 pixels)
keeps little of its arms. This writes a `bench/learners.py` sample whose pool images are the
central FRACTION of each JPEG, made by galpipe itself (`model_inputs` with a CentralFraction, as
`central_fraction` in a project file does), so learners can be compared per frame on the
development split alone. bench/results/learners-framing-compact-cpu.json was made so:

    for f in 0.5 0.7 0.35 0.25; do
      .venv/bin/python bench/learners_real/framing_sample.py RUN_DIR $f /tmp/frame$f.npz
      .venv/bin/python bench/learners.py /tmp/frame$f.npz --starts scratch --epochs 100 --seeds 3 \\
          --learners "compact, one-cycle, galaxy aug." --label "central $f" --out /tmp/frame$f
    done
    .venv/bin/python bench/learners.py --merge bench/results/learners-framing-compact-cpu /tmp/frame*.json

RUN_DIR is a `gz2_spirals_whole_frame` (or earlier `gz2_spirals`) run's data folder: its matched
catalogue says which galaxies form the pool, in the order `bench/learners.py --export` uses; the
test galaxies are left out. The simulated source is copied, not re-framed, so only `scratch`
answers the question.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/learners.py

from learners import pool_in_array_order, quantise  # noqa: E402

from galpipe.cutouts import read_cutouts  # noqa: E402
from galpipe.framing import CentralFraction  # noqa: E402
from galpipe.preprocessing import model_inputs  # noqa: E402


def framed_pool(run_dir: Path, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The pool's images (uint8, in the order of bench/learners.py's export) and their labels."""
    pool = pool_in_array_order(run_dir)
    images = model_inputs(read_cutouts(list(pool.cutout_path)), CentralFraction(fraction), "colour")
    failed = [str(image) for image in images if not isinstance(image, np.ndarray)]
    if failed:
        raise SystemExit(f"{len(failed)} pool image(s) could not be made: {failed[:3]}")
    return quantise(np.stack(images)), pool.spiral.to_numpy(np.int64)


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
