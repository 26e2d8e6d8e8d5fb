"""From raw cutouts to model input: the same angular field in every survey, resampled to
69x69 pixels in g, r, i (or as a colour composite), normalised per image, and stacked into one
memory-mapped array so that training never re-reads FITS files.

Normalisation (per image): subtract each band's sky level (median of the border pixels), then
divide every band by one number, the brightest pixel of the band-summed image's central
9x9 pixels. Galaxy centres sit near 1, the sky near 0, colours are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from astropy.visualization import make_lupton_rgb
from tqdm import tqdm

from galpipe.cutouts import COLOUR_BANDS, Cutout, CutoutError, read_cutout, select_bands
from galpipe.files import atomic_write

MODEL_INPUT_PIXELS = 69
NANOMAGGY_ZEROPOINT_MAG = 22.5
BORDER_PIXELS = 4
CENTRE_HALF_WIDTH = 4


def _centred(pixels: np.ndarray, size: int) -> np.ndarray:
    """The centred size x size square of a (band, y, x) cube."""
    height, width = pixels.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return pixels[:, top:top + size, left:left + size]


def crop_to_field(pixels: np.ndarray, pixel_scale_arcsec: float, field_arcsec: float) -> np.ndarray:
    """The central `field_arcsec` of a (band, y, x) cube; the whole cube if it is smaller."""
    size = int(round(field_arcsec / pixel_scale_arcsec))
    return pixels if size >= min(pixels.shape[-2:]) else _centred(pixels, size)


def central_square(pixels: np.ndarray) -> np.ndarray:
    """The largest centred square of a (band, y, x) cube."""
    return _centred(pixels, min(pixels.shape[-2:]))


def resample(pixels: np.ndarray, size: int = MODEL_INPUT_PIXELS) -> np.ndarray:
    """Area-preserving (antialiased) resampling of a (band, y, x) cube to size x size."""
    tensor = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None]
    return F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[0].numpy()


def normalise_per_image(pixels: np.ndarray) -> np.ndarray:
    border = np.concatenate([pixels[:, :BORDER_PIXELS].reshape(len(pixels), -1),
                             pixels[:, -BORDER_PIXELS:].reshape(len(pixels), -1),
                             pixels[:, :, :BORDER_PIXELS].reshape(len(pixels), -1),
                             pixels[:, :, -BORDER_PIXELS:].reshape(len(pixels), -1)], axis=1)
    sky = np.median(border, axis=1)[:, None, None]
    centred = pixels - sky
    c = pixels.shape[-1] // 2
    centre = centred.sum(axis=0)[c - CENTRE_HALF_WIDTH:c + CENTRE_HALF_WIDTH + 1,
                                 c - CENTRE_HALF_WIDTH:c + CENTRE_HALF_WIDTH + 1]
    scale = centre.max() / len(pixels)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError("no positive signal at the centre of the image")
    return (centred / scale).astype(np.float32)


def colour_image(cutout: Cutout, pixel_scale_arcsec: float, bands: str = "gri") -> np.ndarray:
    """Three bands, bluest first (g, r, i by default), as the Lupton colour composite survey viewers
    show (the reddest as red), on a surface-brightness scale in nanomaggies per arcsec^2:
    (3, y, x) in [0, 1]."""
    zeropoint = cutout.header.get("MAGZERO", NANOMAGGY_ZEROPOINT_MAG) if cutout.header is not None \
        else NANOMAGGY_ZEROPOINT_MAG
    to_nanomaggy_per_arcsec2 = 10 ** (-0.4 * (zeropoint - NANOMAGGY_ZEROPOINT_MAG)) / pixel_scale_arcsec**2
    blue, green, red = select_bands(cutout, bands) * to_nanomaggy_per_arcsec2
    rgb = make_lupton_rgb(red, green, blue, minimum=0.0, stretch=1.5, Q=8)
    return np.moveaxis(rgb, -1, 0).astype(np.float32) / 255.0


def model_input(path, field_arcsec: float | None, mode: str = "bands", bands: str = "gri",
                pixel_scale_arcsec: float | None = None) -> np.ndarray:
    """(3, 69, 69) float32 model input of one cutout: its central `field_arcsec`, or with None the
    whole image (its central square), for cutouts already framed per galaxy.

    mode "bands": the survey bands `bands` (three, bluest first), normalised per image (FITS cutouts).
    mode "colour": a colour composite in [0, 1]; JPEG/PNG cutouts are taken as they are, FITS
    cutouts are turned into the Lupton composite first, so both kinds feed the same model.
    `pixel_scale_arcsec` is for images without a PIXSCALE header (JPEG/PNG).
    """
    cutout = read_cutout(path)
    header = cutout.header
    # A FITS cutout's own PIXSCALE first: in a folder of both kinds the option is for the others.
    scale = (header.get("PIXSCALE") if header is not None else None) or pixel_scale_arcsec
    if scale is None and (field_arcsec is not None or (mode == "colour" and cutout.bands != COLOUR_BANDS)):
        raise CutoutError(path, "pixel scale unknown: no PIXSCALE header and none configured")
    if cutout.bands == COLOUR_BANDS:
        if mode != "colour":
            raise CutoutError(path, "a colour image can only feed a model in mode 'colour'")
        pixels = cutout.pixels
    elif mode == "colour":
        pixels = colour_image(cutout, scale, bands)
    else:
        pixels = select_bands(cutout, bands)
    framed = central_square(pixels) if field_arcsec is None else crop_to_field(pixels, scale, field_arcsec)
    resampled = resample(framed)
    if mode == "colour":
        return np.clip(resampled, 0, 1)
    try:
        return normalise_per_image(resampled)
    except ValueError as err:
        raise CutoutError(path, str(err)) from None


def build_model_inputs(manifest: pd.DataFrame, out_path: Path, field_arcsec: float | pd.Series | None,
                       mode: str = "bands", pixel_scale_arcsec: float | None = None, bands: str = "gri") -> pd.DataFrame:
    """Stack the model inputs of every good cutout into one .npy array at `out_path`, each over
    `field_arcsec`: one field for all, each galaxy's own (a Series by object_id), or None for
    whole images (see galpipe.framing).

    Returns the index, a row per manifest row: object_id, row (in the array), status ('ok' or
    'failed') and reason; a cutout that cannot be made into a model input, or that had none to
    begin with (failed or quarantined in the manifest), is counted, not silently dropped.
    """
    out_path = Path(out_path)
    index = []
    rows = []
    reasons = manifest.reason if "reason" in manifest else pd.Series("", index=manifest.index)
    for object_id, path, status, reason in tqdm(zip(manifest.object_id, manifest.path, manifest.status, reasons),
                                                total=len(manifest), desc="model inputs", unit="cutout", disable=None):
        if status != "ok":
            index.append({"object_id": object_id, "row": -1, "status": "failed", "reason": f"cutout {status}: {reason}"})
            continue
        try:
            field = field_arcsec.loc[object_id] if isinstance(field_arcsec, pd.Series) else field_arcsec
            rows.append(model_input(path, field, mode, bands, pixel_scale_arcsec))
            index.append({"object_id": object_id, "row": len(rows) - 1, "status": "ok", "reason": ""})
        except CutoutError as err:
            index.append({"object_id": object_id, "row": -1, "status": "failed", "reason": err.reason})
    array = np.stack(rows) if rows else np.zeros((0, 3, MODEL_INPUT_PIXELS, MODEL_INPUT_PIXELS), np.float32)
    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to a bare name
            np.save(f, array)

    atomic_write(out_path, write)
    return pd.DataFrame(index, columns=["object_id", "row", "status", "reason"])


def load_model_inputs(path) -> np.ndarray:
    """The stacked inputs, memory-mapped (read-only): only the rows a batch needs are read."""
    return np.load(path, mmap_mode="r")


@dataclass
class ModelInputs:
    """What a `model_inputs` asset holds: the stacked array's path and its index (object_id, row
    in the array, status 'ok' or 'failed', reason), and the field that galpipe predict must cut
    from new cutouts for the models trained on them (None: each cutout whole; galpipe.framing)."""

    array_path: str
    index: pd.DataFrame
    model_field_arcsec: float | None = 40.0

    def array(self) -> np.ndarray:
        return load_model_inputs(self.array_path)
