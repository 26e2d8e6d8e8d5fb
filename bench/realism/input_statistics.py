"""How the simulated source's model inputs compare with the real target's, without any label:
the mean brightness in rings around the centre, the colour of the centre, and the noise at the
edge, median over galaxies, for each colour rendering (galpipe.preprocessing.COLOUR_RENDERINGS).
A rendering that makes simulated galaxies look like the real ones should bring these together.

    .venv/bin/python bench/realism/input_statistics.py --project bench/realism/gz2_spirals_whole_frame.yaml --n 200 \\
        --out bench/results/realism_input_statistics

The source galaxies are a random sample of the project's simulated catalogue, rendered with the
project's framing; the target galaxies are the first of its folder. Writes `<out>.json` and `<out>.md`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is not part of the package

from galpipe.preprocessing import COLOUR_RENDERINGS, MODEL_INPUT_PIXELS, build_model_inputs  # noqa: E402
from galpipe.project import load_project  # noqa: E402

RINGS_PX = ((0, 3), (3, 8), (8, 15), (15, 25), (25, 34))  # radii in the 69-pixel input
CENTRE_PX, EDGE_PX = 8, 28


def statistics(inputs: np.ndarray) -> dict:
    """Median over galaxies of: the mean of R, G, B in each ring; R, G, B within the centre; the
    standard deviation of the RGB mean beyond the edge radius (sky noise)."""
    y, x = np.mgrid[:MODEL_INPUT_PIXELS, :MODEL_INPUT_PIXELS] - MODEL_INPUT_PIXELS // 2
    radius = np.hypot(x, y)
    brightness = inputs.mean(axis=1)
    return {"ring_brightness": [round(float(np.median(brightness[:, (radius >= a) & (radius < b)].mean(axis=1))), 3)
                                for a, b in RINGS_PX],
            "centre_rgb": [round(float(np.median(inputs[:, c][:, radius < CENTRE_PX].mean(axis=1))), 3) for c in range(3)],
            "edge_noise": round(float(np.median(brightness[:, radius >= EDGE_PX].std(axis=1))), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The frame realism_input_statistics.md was measured with (each image whole).
    parser.add_argument("--project", default=str(Path(__file__).with_name("gz2_spirals_whole_frame.yaml")))
    parser.add_argument("--n", type=int, default=200, help="galaxies of each side")
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()
    project = load_project(args.project)
    profile, source, target = project.profile, project.source, project.target
    results = {"project": args.project, "n": args.n, "rings_px": RINGS_PX, "rows": {}}
    with tempfile.TemporaryDirectory(prefix="galpipe-realism-") as scratch:
        scratch = Path(scratch)
        catalog = source.load_catalog(profile).sample(args.n, random_state=0)
        manifest = source.build_cutouts(catalog, profile, scratch / "source", n_workers=None)
        fields = source.get_framing().fields_arcsec(catalog)
        for rendering in COLOUR_RENDERINGS:
            index = build_model_inputs(manifest, scratch / f"{rendering}.npy", fields, "colour",
                                       source.image_pixel_scale_arcsec(), colour_rendering=rendering)
            inputs = np.load(scratch / f"{rendering}.npy")
            results["rows"][f"simulated {source.name}, {rendering}"] = {**statistics(inputs),
                                                                         "n_ok": int((index.status == "ok").sum())}
        target_catalog = target.load_catalog(profile).head(args.n)
        target_manifest = target.build_cutouts(target_catalog, profile, scratch / "target", n_workers=None)
        index = build_model_inputs(target_manifest, scratch / "target.npy", target.get_framing().fields_arcsec(target_catalog),
                                   "colour", target.image_pixel_scale_arcsec())
        results["rows"][f"real {target.name}"] = {**statistics(np.load(scratch / "target.npy")),
                                                  "n_ok": int((index.status == "ok").sum())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(results, indent=1))
    rings = ", ".join(f"{a}-{b}" for a, b in RINGS_PX)
    lines = [f"Model inputs of `{args.project}` ({args.n} galaxies each side), medians over galaxies.", "",
             f"| inputs | mean brightness in rings of {rings} px | centre R, G, B (r < {CENTRE_PX} px) | "
             f"sky noise (r >= {EDGE_PX} px) |", "|---|---|---|---|"]
    for name, row in results["rows"].items():
        lines.append(f"| {name} | {', '.join(map(str, row['ring_brightness']))} | "
                     f"{', '.join(map(str, row['centre_rgb']))} | {row['edge_noise']} |")
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
