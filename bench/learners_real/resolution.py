"""Do more pixels help on the real spirals? The central half of each GZ2 JPEG (212 of its 424
pixels) becomes a 69x69 model input, a third of the JPEG's resolution; the arms are fine structure.
This makes `bench/learners.py` samples of the pool's galaxies at any input size, resampled by
galpipe itself (`model_inputs` with MODEL_INPUT_PIXELS set for the process), and runs the learners
there, with one more: `compact` behind a learned stride-2 stem ("compact stem2"), which takes twice
the pixels down to `compact`'s own sizes (plain `compact` sees a smaller share of a larger image
through its fixed receptive field of 43 pixels).

The pool is the one a `gz2_spirals` project makes (galpipe.matching.assign_split over the
catalogue's galaxy_id, test fraction 0.4: 1,211 galaxies, in the catalogue's order); the test
galaxies are never in the sample, and bench/learners.py judges on its development split inside it.
The simulated source is a placeholder: only `scratch` answers the question.

    .venv/bin/python bench/learners_real/resolution.py sample 69 /tmp/p69.npz
    .venv/bin/python bench/learners_real/resolution.py sample 138 /tmp/p138.npz
    .venv/bin/python bench/learners_real/resolution.py learners /tmp/p138.npz --starts scratch --epochs 100 \\
        --seeds 3 --learners "compact stem2, one-cycle, galaxy aug." --label "central 0.5, 138 px" --out /tmp/r138stem

(`learners` takes bench/learners.py's arguments. GFLOP/image in its table is at 69x69 whatever
the sample's size.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # bench/learners.py

import learners  # noqa: E402

import galpipe.preprocessing as preprocessing  # noqa: E402
from galpipe.cutouts import read_cutouts  # noqa: E402
from galpipe.framing import CentralFraction  # noqa: E402
from galpipe.matching import assign_split  # noqa: E402
from galpipe.models import ARCHITECTURES, Compact, _conv_bn  # noqa: E402

GZ2_SPIRALS = ROOT.parent / "shared" / "data" / "gz2_spirals"
TEST_FRACTION = 0.4  # galpipe.profiles.Profile's, as gz2_spirals keeps it
CENTRAL_FRACTION = 0.5  # gz2_spirals' frame


@ARCHITECTURES.register("compact_stem2")
class CompactStem2(Compact):
    """`compact` with a stride-2 convolution in front: inputs of 2 x 69 pixels reach its layers at
    its own sizes, the downsampling learned instead of resampled."""

    def __init__(self, width: int = 16):
        super().__init__(width)
        layers = [*_conv_bn(3, width // 2, 2), *self.features.children()]
        layers[3] = nn.Conv2d(width // 2, width // 2, 3, stride=2, padding=1, bias=False)  # was compact's first
        self.features = nn.Sequential(*layers)


learners.LEARNERS["compact stem2, one-cycle, galaxy aug."] = (
    "compact_stem2", {}, learners.LEARNERS["compact, one-cycle, galaxy aug."][2])


def sample(pixels: int, out: Path) -> None:
    catalog = pd.read_csv(GZ2_SPIRALS / "catalog.csv")
    pool = catalog[assign_split(catalog.galaxy_id.astype(str), TEST_FRACTION) == "pool"].reset_index(drop=True)
    preprocessing.MODEL_INPUT_PIXELS = pixels  # read by model_inputs when it makes the batch
    images = preprocessing.model_inputs(read_cutouts([GZ2_SPIRALS / p for p in pool.image]),
                                        CentralFraction(CENTRAL_FRACTION), "colour")
    failed = [str(image) for image in images if not isinstance(image, np.ndarray)]
    if failed:
        raise SystemExit(f"{len(failed)} pool image(s) could not be made: {failed[:3]}")
    np.savez_compressed(out, pool_x=learners.quantise(np.stack(images)), pool_y=pool.spiral.to_numpy(np.int64),
                        source_x=np.zeros((1, 3, pixels, pixels), np.uint8), source_y=np.zeros(1, np.int64))
    print(f"{out}: {len(pool)} pool galaxies, the central {CENTRAL_FRACTION:g} of each JPEG at {pixels} px")


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "sample":
        sample(int(argv[1]), Path(argv[2]))
        return 0
    if argv and argv[0] == "learners":
        return learners.main(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
