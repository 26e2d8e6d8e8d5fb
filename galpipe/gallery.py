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
from matplotlib.patches import Rectangle  # noqa: E402

from galpipe.cutouts import COLOUR_BANDS, Cutout, read_cutout  # noqa: E402
from galpipe.evaluation import save_figure  # noqa: E402
from galpipe.framing import CentralFraction  # noqa: E402
from galpipe.preprocessing import colour_image, field_box, pixel_scale  # noqa: E402


def colour_composite(cutout: Cutout) -> np.ndarray:
    """RGB image (y, x, 3) in [0, 1] of a cutout: the Lupton composite of a FITS cutout's g, r, i
    bands, or a colour JPEG/PNG as it is."""
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


def _draw_model_field(ax, cutout: Cutout, object_id: str, frame) -> bool:
    """A dashed square around the part of the image the models see, where that is less than 90% of
    it (a pixel's rounding is not worth a line); returns whether it drew one.
    `frame`: (the survey's field: one for every galaxy, or a Series by object_id; the pixel scale
    of images without a PIXSCALE header)."""
    fields, pixel_scale_arcsec = frame
    if isinstance(fields, pd.Series):
        if object_id not in fields.index:
            return False
        field = float(fields[object_id])
    else:
        field = fields
    scale = pixel_scale(cutout, pixel_scale_arcsec)
    if scale is None and field is not None and not isinstance(field, CentralFraction):
        return False  # a field in arcsec on an image of unknown scale
    height, width = cutout.pixels.shape[-2:]
    top, left, box_height, box_width = field_box(height, width, field, scale)
    if box_height * box_width >= 0.9 * height * width:
        return False
    # imshow(origin="lower") puts row 0 at the bottom, pixel centres on integers.
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), box_width, box_height, fill=False, edgecolor="white",
                           linestyle="--", linewidth=0.8))
    return True


def make_gallery(galaxies: pd.DataFrame, source_paths: dict[str, str], tasks, out_path: Path,
                 source_name: str, target_name: str, probabilities: pd.DataFrame | None = None,
                 model_fields: dict | None = None) -> Path:
    """One column per galaxy: the source survey's image above the target's, labels below, and
    with `probabilities` (object_id, p_<task>) the model's probability of each task. With
    `model_fields` ("source"/"target" -> (field, pixel scale); see _draw_model_field), a dashed square
    shows the part of each image that becomes model input, where the models see clearly less than
    the whole image."""
    has_source = galaxies.source_object_id.notna().any() if "source_object_id" in galaxies else False
    n_rows = 2 if has_source else 1
    caption_inches = 0.4 + (0.4 if probabilities is not None else 0)
    fig, axes = plt.subplots(n_rows, len(galaxies), figsize=(2.2 * len(galaxies), 2.3 * n_rows + caption_inches),
                             squeeze=False)
    outlined = False
    for col, row in enumerate(galaxies.itertuples(index=False)):
        images = [("target", target_name, row.object_id, row.cutout_path)]
        if has_source:
            images.insert(0, ("source", source_name, row.source_object_id, source_paths.get(row.source_object_id)))
        for ax_row, (role, survey, object_id, path) in enumerate(images):
            ax = axes[ax_row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if path:
                cutout = read_cutout(path)
                ax.imshow(colour_composite(cutout), origin="lower")
                if model_fields and role in model_fields:
                    outlined |= _draw_model_field(ax, cutout, object_id, model_fields[role])
            if col == 0:
                ax.set_ylabel(survey.upper(), fontsize=11)
        labels = ", ".join(task for task in tasks if getattr(row, task) == 1) or "smooth / none"
        caption = f"{row.object_id}\n{labels}"
        if probabilities is not None and row.object_id in probabilities.index:
            p = probabilities.loc[row.object_id]
            caption += "".join(f"\np({task}) = {p[f'p_{task}']:.2f}" for task in tasks if f"p_{task}" in p)
        axes[-1, col].set_xlabel(caption, fontsize=7)
    title = (f"The same galaxies in {source_name.upper()} and {target_name.upper()}" if has_source
             else f"{target_name} sample")
    if outlined:
        title += "\n(dashed: the part of the image the models see)"
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, out_path)
