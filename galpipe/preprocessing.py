"""From raw cutouts to model input: the same angular field in every survey, resampled to
69x69 pixels in g, r, i (or as a colour composite), normalised per image, and stacked into one
memory-mapped array so that training never re-reads FITS files.

Normalisation (per image): subtract each band's sky level (median of the border pixels), then
divide every band by one number, the brightest pixel of the band-summed image's central
9x9 pixels. Galaxy centres sit near 1, the sky near 0, colours are kept.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.visualization import make_lupton_rgb
from PIL import Image
from tqdm import tqdm

from galpipe.cutouts import COLOUR_BANDS, Cutout, CutoutError, read_cutout, read_cutouts, select_bands
from galpipe.files import atomic_write
from galpipe.framing import CentralFraction, ModelField
from galpipe.registry import Registry
from galpipe.resampling import resample_into

MODEL_INPUT_PIXELS = 69
NANOMAGGY_ZEROPOINT_MAG = 22.5
BORDER_PIXELS = 4
CENTRE_HALF_WIDTH = 4
NO_SIGNAL = "no positive signal at the centre of the image"
# Cutouts read and preprocessed together (resampled into one batch, normalised as one). Of 16, 32,
# 64 and 128, 64 made `galpipe predict` fastest here (README, Performance).
BATCH_CUTOUTS = 64
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt options, from glibc's <malloc.h>


def field_box(height: int, width: int, field_arcsec: ModelField,
              pixel_scale_arcsec: float | None = None) -> tuple[int, int, int, int]:
    """(top, left, height, width), in pixels, of the part of a height x width image that becomes
    model input: the central `field_arcsec` (all of it if the image is smaller); with None the
    largest centred square; with a CentralFraction the central part of that square."""
    if field_arcsec is None or isinstance(field_arcsec, CentralFraction):
        square = min(height, width)
        side = square if field_arcsec is None else round(square * field_arcsec.fraction)
        # The largest centred square first, then the centred part of it.
        return ((height - square) // 2 + (square - side) // 2, (width - square) // 2 + (square - side) // 2,
                side, side)
    side = int(round(field_arcsec / pixel_scale_arcsec))
    if side >= min(height, width):
        return 0, 0, height, width
    return (height - side) // 2, (width - side) // 2, side, side


def median_last_axis(values: np.ndarray) -> np.ndarray:
    """np.median(values, axis=-1) of floating-point values (float32 or float64), the same numbers,
    NaN included, at about half its cost here (one partition and a maximum: the border medians
    were a fifth of `galpipe predict`'s preparation)."""
    m = values.shape[-1]
    upper = np.partition(values, m // 2, axis=-1)
    middle = upper[..., m // 2]
    median = middle if m % 2 else (upper[..., :m // 2].max(axis=-1) + middle) / values.dtype.type(2)
    return np.where(np.isnan(values).any(axis=-1), np.nan, median).astype(values.dtype, copy=False)


def normalise_images(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image normalisation of a stack (image, band, y, x): returns the normalised stack and,
    per image, whether it had a positive signal at its centre (an image without one cannot be
    normalised; its row is not to be used)."""
    n, bands = images.shape[:2]
    border = np.concatenate([images[:, :, :BORDER_PIXELS].reshape(n, bands, -1),
                             images[:, :, -BORDER_PIXELS:].reshape(n, bands, -1),
                             images[:, :, :, :BORDER_PIXELS].reshape(n, bands, -1),
                             images[:, :, :, -BORDER_PIXELS:].reshape(n, bands, -1)], axis=2)
    sky = median_last_axis(border)[:, :, None, None]
    centred = images - sky
    c = images.shape[-1] // 2
    centre = centred[:, :, c - CENTRE_HALF_WIDTH:c + CENTRE_HALF_WIDTH + 1,
                     c - CENTRE_HALF_WIDTH:c + CENTRE_HALF_WIDTH + 1].sum(axis=1)
    scale = centre.reshape(n, -1).max(axis=1) / bands
    usable = np.isfinite(scale) & (scale > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        centred /= np.where(usable, scale, 1.0)[:, None, None, None]  # in place: no second copy of the stack
    return centred.astype(np.float32, copy=False), usable


def _nanomaggies_per_count(cutout: Cutout) -> float:
    """Nanomaggies per unit of the cutout's pixels (from its MAGZERO; 22.5 without one)."""
    zeropoint = cutout.header.get("MAGZERO", NANOMAGGY_ZEROPOINT_MAG) if cutout.header is not None \
        else NANOMAGGY_ZEROPOINT_MAG
    return 10 ** (-0.4 * (zeropoint - NANOMAGGY_ZEROPOINT_MAG))


# The SDSS viewer look: the asinh stretch of Lupton et al. (2004) with the parameters of the Legacy
# Survey viewer's SDSS layer (legacypipe's sdss_rgb), per nanomaggy per pixel, bluest band first.
VIEWER_BAND_SCALES = (2.5, 1.5, 1.0)
VIEWER_SOFTENING = 0.02
VIEWER_Q = 20.0
VIEWER_JPEG_QUALITY = 75  # Pillow's default; the viewers' own quality is not published

# How a FITS cutout becomes a colour image in colour mode (the profile's `colour_rendering`).
COLOUR_RENDERINGS: Registry = Registry("colour rendering")


@COLOUR_RENDERINGS.register("lupton")
def lupton_colour(cutout: Cutout, pixel_scale_arcsec: float, bands: str = "gri") -> np.ndarray:
    """Three bands, bluest first (g, r, i by default), as a Lupton et al. (2004) colour composite
    (the reddest as red) on a surface-brightness scale in nanomaggies per arcsec^2: (3, y, x) in [0, 1]."""
    blue, green, red = select_bands(cutout, bands) * (_nanomaggies_per_count(cutout) / pixel_scale_arcsec**2)
    rgb = make_lupton_rgb(red, green, blue, minimum=0.0, stretch=1.5, Q=8)
    return np.moveaxis(rgb, -1, 0).astype(np.float32) / 255.0


@COLOUR_RENDERINGS.register("lupton_balanced")
def lupton_balanced_colour(cutout: Cutout, pixel_scale_arcsec: float, bands: str = "gri") -> np.ndarray:
    """lupton_colour with the bands weighted as survey viewers weight them (VIEWER_BAND_SCALES,
    relative to the middle band): a galaxy's red light no longer dominates its colour."""
    weights = np.asarray(VIEWER_BAND_SCALES, np.float32)[:, None, None] / np.float32(VIEWER_BAND_SCALES[1])
    weighted = Cutout(cutout.path, select_bands(cutout, bands) * weights, bands, cutout.header)
    return lupton_colour(weighted, pixel_scale_arcsec, bands)


@COLOUR_RENDERINGS.register("sdss_viewer")
def sdss_viewer_colour(cutout: Cutout, pixel_scale_arcsec: float, bands: str = "gri") -> np.ndarray:
    """Three bands, bluest first, as a survey viewer's colour JPEG shows them: each band scaled and
    softened, the mean intensity I stretched by asinh(Q I) / sqrt(Q), the reddest as red, then
    saved as an 8-bit JPEG and read back, with its rounding and compression artefacts:
    (3, y, x) in [0, 1]."""
    scales = np.asarray(VIEWER_BAND_SCALES, np.float32)[:, None, None] * np.float32(_nanomaggies_per_count(cutout))
    scaled = select_bands(cutout, bands) * scales + np.float32(VIEWER_SOFTENING)
    intensity = np.maximum(scaled, 0).mean(axis=0)
    stretch = np.arcsinh(VIEWER_Q * intensity) / np.sqrt(VIEWER_Q) / np.maximum(intensity, 1e-6)
    rgb = np.clip(scaled[::-1] * stretch, 0, 1)  # red, green, blue
    encoded = io.BytesIO()
    Image.fromarray(np.round(np.moveaxis(rgb, 0, -1) * 255).astype(np.uint8)).save(
        encoded, format="JPEG", quality=VIEWER_JPEG_QUALITY)
    return np.moveaxis(np.asarray(Image.open(encoded).convert("RGB"), dtype=np.float32), -1, 0) / 255.0


def colour_image(cutout: Cutout, pixel_scale_arcsec: float, bands: str = "gri", rendering: str = "lupton") -> np.ndarray:
    return COLOUR_RENDERINGS.get(rendering)(cutout, pixel_scale_arcsec, bands)


def model_input(path, field_arcsec: ModelField, mode: str = "bands", bands: str = "gri",
                pixel_scale_arcsec: float | None = None, colour_rendering: str = "lupton") -> np.ndarray:
    """(3, 69, 69) float32 model input of one cutout: its central `field_arcsec`, or with None the
    whole image (its central square), for cutouts already framed per galaxy, or with a
    CentralFraction the central part of that square.

    mode "bands": the survey bands `bands` (three, bluest first), normalised per image (FITS cutouts).
    mode "colour": a colour composite in [0, 1]; JPEG/PNG cutouts are taken as they are, FITS
    cutouts are made into a colour image first (`colour_rendering`: COLOUR_RENDERINGS), so both
    kinds feed the same model. `pixel_scale_arcsec` is for images without a PIXSCALE header (JPEG/PNG).
    """
    [made] = model_inputs([read_cutout(path)], field_arcsec, mode, bands, pixel_scale_arcsec, colour_rendering)
    if isinstance(made, CutoutError):
        raise made
    return made


def pixel_scale(cutout: Cutout, configured_arcsec: float | None) -> float | None:
    """arcsec/pixel of a cutout: a FITS cutout's own PIXSCALE first (in a folder of both kinds, the
    configured scale is for the JPEG/PNG ones), else the configured one."""
    return (cutout.header.get("PIXSCALE") if cutout.header is not None else None) or configured_arcsec


def _framed(cutout: Cutout, field_arcsec: ModelField, mode: str, bands: str,
            pixel_scale_arcsec: float | None, colour_rendering: str) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The planes (bands or colours) that model_input resamples, and the box (top, left, height,
    width) of the field in them."""
    scale = pixel_scale(cutout, pixel_scale_arcsec)
    whole = field_arcsec is None or isinstance(field_arcsec, CentralFraction)
    if scale is None and (not whole or (mode == "colour" and cutout.bands != COLOUR_BANDS)):
        raise CutoutError(cutout.path, "pixel scale unknown: no PIXSCALE header and none configured")
    if cutout.bands == COLOUR_BANDS:
        if mode != "colour":
            raise CutoutError(cutout.path, "a colour image can only feed a model in mode 'colour'")
        pixels = cutout.pixels
    elif mode == "colour":
        pixels = colour_image(cutout, scale, bands, colour_rendering)
    else:
        pixels = select_bands(cutout, bands)
    box = field_box(*pixels.shape[-2:], field_arcsec, scale)
    if min(box[2:]) < 1:
        raise CutoutError(cutout.path, f"the field ({field_arcsec}) is smaller than one of its pixels")
    return pixels, box


def model_inputs(cutouts: list, field_arcsec, mode: str = "bands", bands: str = "gri",
                 pixel_scale_arcsec: float | None = None, colour_rendering: str = "lupton") -> list:
    """model_input for many cutouts (Cutouts, or CutoutErrors passed through), each over
    `field_arcsec` (one field, or a list with one per cutout): a (3, 69, 69) array or the
    CutoutError saying why not. Cutouts framed to the same shape are resampled and normalised as
    one stack, which costs less than one by one and gives the same numbers."""
    made, groups = _made_by_shape(cutouts, field_arcsec, mode, bands, pixel_scale_arcsec, colour_rendering)
    for members, out in groups:
        for i, image in zip(members, out):
            made[i] = image
    return made


def stacked_model_inputs(cutouts: list, field_arcsec, mode: str = "bands", bands: str = "gri",
                         pixel_scale_arcsec: float | None = None, colour_rendering: str = "lupton"
                         ) -> tuple[np.ndarray, list]:
    """model_inputs as one (n_usable, 3, 69, 69) stack, in the cutouts' order, and per cutout the
    CutoutError saying why it is not in the stack (None for those that are). When every cutout
    made an input of one shape, the stack is the one they were normalised in, not a copy."""
    made, groups = _made_by_shape(cutouts, field_arcsec, mode, bands, pixel_scale_arcsec, colour_rendering)
    errors = [m if isinstance(m, CutoutError) else None for m in made]
    if len(groups) == 1 and len(groups[0][0]) == len(cutouts):
        return groups[0][1], errors
    for members, out in groups:
        for i, image in zip(members, out):
            made[i] = image
    usable = [m for m in made if not isinstance(m, CutoutError)]
    return (np.stack(usable) if usable else np.zeros((0, 3, MODEL_INPUT_PIXELS, MODEL_INPUT_PIXELS), np.float32)), errors


def _made_by_shape(cutouts: list, field_arcsec, mode: str, bands: str, pixel_scale_arcsec: float | None,
                   colour_rendering: str) -> tuple[list, list[tuple[list[int], np.ndarray]]]:
    """Per cutout its CutoutError (None for the rest), and per shape framed the positions of its
    usable cutouts with their inputs, resampled and normalised as one stack."""
    fields = list(field_arcsec) if isinstance(field_arcsec, (list, tuple, np.ndarray, pd.Series)) \
        else [field_arcsec] * len(cutouts)
    made: list = [c if isinstance(c, CutoutError) else None for c in cutouts]
    by_shape: dict[tuple, list[tuple[int, tuple]]] = {}  # (bands, height, width) framed -> (i, (pixels, box))
    for i, (cutout, field) in enumerate(zip(cutouts, fields, strict=True)):
        if isinstance(cutout, CutoutError):
            continue
        try:
            pixels, box = _framed(cutout, field, mode, bands, pixel_scale_arcsec, colour_rendering)
        except CutoutError as err:
            made[i] = err
            continue
        by_shape.setdefault((len(pixels), *box[2:]), []).append((i, (pixels, box)))
    groups = []
    for shape, group in by_shape.items():
        # Each galaxy straight from its own pixels into the batch: no full-size stack first.
        resampled = np.empty((len(group), shape[0], MODEL_INPUT_PIXELS, MODEL_INPUT_PIXELS), np.float32)
        for (_, (pixels, box)), out in zip(group, resampled):
            resample_into(pixels, out, box)
        if mode == "colour":
            out, usable = np.clip(resampled, 0, 1), np.ones(len(group), bool)
        else:
            out, usable = normalise_images(resampled)
        for (i, _), ok in zip(group, usable):
            if not ok:
                made[i] = CutoutError(cutouts[i].path, NO_SIGNAL)
        members = [i for (i, _), ok in zip(group, usable) if ok]
        groups.append((members, out if usable.all() else out[usable]))
    return made, groups


def keep_freed_memory() -> None:
    """Let glibc keep the memory of a finished batch of cutouts for the next one. By default it
    gives blocks over 128 KB (a 40" DES cutout is 277 KB, a batch of inputs 3.6 MB) back to the
    system when freed, and every batch then faults its pages in afresh: reading a galaxy from a
    stack took 0.16 ms instead of 0.04 (one-off timing, batches of 64). Process-wide and for the
    rest of the process: each of glibc's arenas (about one per thread) may keep up to 128 MB of
    freed memory instead of 128 KB. Linux only."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # a C library without mallopt (musl has one)
            libc = ctypes.CDLL(None)
            libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
            libc.mallopt(M_TRIM_THRESHOLD, 128 << 20)


def build_model_inputs(manifest: pd.DataFrame, out_path: Path, field_arcsec: ModelField | pd.Series,
                       mode: str = "bands", pixel_scale_arcsec: float | None = None, bands: str = "gri",
                       colour_rendering: str = "lupton") -> pd.DataFrame:
    """Stack the model inputs of every good cutout into one .npy array at `out_path`, each over
    `field_arcsec`: one field for all, each galaxy's own (a Series by object_id), None for whole
    images, or a CentralFraction of each (see galpipe.framing).

    Returns the index, a row per manifest row: object_id, row (in the array), status ('ok' or
    'failed') and reason; a cutout that cannot be made into a model input, or that had none to
    begin with (failed or quarantined in the manifest), is counted, not silently dropped.
    """
    out_path = Path(out_path)
    keep_freed_memory()
    index = []
    rows = []
    reasons = manifest.reason if "reason" in manifest else pd.Series("", index=manifest.index)
    with tqdm(total=len(manifest), desc="model inputs", unit="cutout", disable=None) as bar:
        for start in range(0, len(manifest), BATCH_CUTOUTS):
            batch = manifest.iloc[start:start + BATCH_CUTOUTS]
            batch_reasons = reasons.iloc[start:start + BATCH_CUTOUTS]
            good = (batch.status == "ok").to_numpy()
            ids = batch.object_id[good]
            fields = field_arcsec.loc[ids].tolist() if isinstance(field_arcsec, pd.Series) else field_arcsec
            cutouts = read_cutouts(list(batch.path[good]), object_ids=list(ids))
            made = dict(zip(np.flatnonzero(good), model_inputs(cutouts, fields, mode, bands, pixel_scale_arcsec,
                                                                colour_rendering), strict=True))
            for i, (object_id, status, reason) in enumerate(zip(batch.object_id, batch.status, batch_reasons)):
                if status != "ok":
                    index.append({"object_id": object_id, "row": -1, "status": "failed",
                                  "reason": f"cutout {status}: {reason}"})
                elif isinstance(made[i], CutoutError):
                    index.append({"object_id": object_id, "row": -1, "status": "failed", "reason": made[i].reason})
                else:
                    rows.append(made[i])
                    index.append({"object_id": object_id, "row": len(rows) - 1, "status": "ok", "reason": ""})
            bar.update(len(batch))
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
    model_field_arcsec: ModelField = 40.0

    def array(self) -> np.ndarray:
        return load_model_inputs(self.array_path)
