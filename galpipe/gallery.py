"""A picture of the same galaxies as two surveys see them: colour composites (astropy's
make_lupton_rgb, i/r/g as red/green/blue) on a common surface-brightness scale, so the
difference in resolution and depth shows as it is."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from galpipe.cutouts import COLOUR_BANDS, read_cutout  # noqa: E402
from galpipe.evaluation import save_figure  # noqa: E402
from galpipe.preprocessing import colour_image  # noqa: E402


def colour_composite(path) -> np.ndarray:
    """RGB image (y, x, 3) in [0, 1] of a cutout: the Lupton composite of a FITS cutout's g, r, i
    bands, or a colour JPEG/PNG as it is."""
    cutout = read_cutout(path)
    if cutout.bands != COLOUR_BANDS:
        return np.moveaxis(colour_image(cutout, cutout.header.get("PIXSCALE", 1.0)), 0, -1)
    return np.moveaxis(cutout.pixels, 0, -1)


def pick_gallery_galaxies(matched: pd.DataFrame, tasks, per_class: int = 2) -> pd.DataFrame:
    """A few of the brightest labelled galaxies with good cutouts: for each task, some with the
    label and, once, some smooth ones with none."""
    usable = matched[matched.split.isin(["pool", "test"])].sort_values("mag_r" if "mag_r" in matched else "object_id")
    chosen = []
    for task in tasks:
        chosen.append(usable[usable[task] == 1].head(per_class))
    chosen.append(usable[(usable[list(tasks)] == 0).all(axis=1)].head(per_class))
    return pd.concat(chosen).drop_duplicates("object_id")


def make_gallery(galaxies: pd.DataFrame, source_paths: dict[str, str], tasks, out_path: Path,
                 source_name: str, target_name: str, probabilities: pd.DataFrame | None = None) -> Path:
    """One column per galaxy: the source survey's image above the target's, labels below, and
    with `probabilities` (object_id, p_<task>) the model's probability of each task."""
    has_source = galaxies.source_object_id.notna().any() if "source_object_id" in galaxies else False
    n_rows = 2 if has_source else 1
    caption_inches = 0.4 + (0.4 if probabilities is not None else 0)
    fig, axes = plt.subplots(n_rows, len(galaxies), figsize=(2.2 * len(galaxies), 2.3 * n_rows + caption_inches),
                             squeeze=False)
    for col, row in enumerate(galaxies.itertuples(index=False)):
        images = [(target_name, row.cutout_path)]
        if has_source:
            images.insert(0, (source_name, source_paths.get(row.source_object_id)))
        for ax_row, (survey, path) in enumerate(images):
            ax = axes[ax_row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if path:
                ax.imshow(colour_composite(path), origin="lower")
            if col == 0:
                ax.set_ylabel(survey.upper(), fontsize=11)
        labels = ", ".join(task for task in tasks if getattr(row, task) == 1) or "smooth / none"
        caption = f"{row.object_id}\n{labels}"
        if probabilities is not None and row.object_id in probabilities.index:
            p = probabilities.loc[row.object_id]
            caption += "".join(f"\np({task}) = {p[f'p_{task}']:.2f}" for task in tasks if f"p_{task}" in p)
        axes[-1, col].set_xlabel(caption, fontsize=7)
    fig.suptitle(f"The same galaxies in {source_name.upper()} and {target_name.upper()}" if has_source
                 else f"{target_name} sample", fontsize=11)
    return save_figure(fig, out_path)
