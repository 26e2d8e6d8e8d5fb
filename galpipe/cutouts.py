"""Cutout files: FITS cubes (band, y, x) with a celestial WCS, the layout the Legacy Survey
viewer serves, and the colour JPEG/PNG images that Galaxy Zoo shows. Reading validates a
cutout and raises CutoutError naming the file and what is wrong with it.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image, UnidentifiedImageError

from galpipe.files import atomic_write

FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fits.fz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# A colour image's channels: display colours, not survey bands.
COLOUR_BANDS = "RGB"
IMAGE_HDU_TYPES = ("IMAGE_HDU",)  # fitsio's name for image HDUs, tile-compressed ones included


class CutoutError(ValueError):
    """A cutout that cannot be used; the message names the file."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class Cutout:
    path: Path
    pixels: np.ndarray  # (band, y, x) float32
    bands: str  # one letter per plane, e.g. "gri", or "RGB" for a colour image
    header: Mapping | None = None  # a FITS cutout's keywords (PIXSCALE, BANDS, the WCS, ...)

    @property
    def wcs(self) -> WCS | None:
        """Celestial WCS of a FITS cutout (built on demand: it costs as much as reading the file)."""
        if self.header is None or "CTYPE1" not in self.header:
            return None
        try:
            return WCS(fits.Header(dict(self.header)), naxis=2)
        except Exception as err:  # astropy raises several types for a bad WCS
            raise CutoutError(self.path, f"invalid WCS ({err})") from None


def cutout_wcs(ra_deg: float, dec_deg: float, pixel_scale_arcsec: float, size_pixels: int) -> WCS:
    """Gnomonic (TAN) WCS centred on (ra, dec), north up, east left."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra_deg, dec_deg]
    wcs.wcs.crpix = [(size_pixels + 1) / 2, (size_pixels + 1) / 2]
    wcs.wcs.cdelt = [-pixel_scale_arcsec / 3600, pixel_scale_arcsec / 3600]
    wcs.wcs.cunit = ["deg", "deg"]
    return wcs


def write_cutout_fits(path: Path, pixels: np.ndarray, bands: str, ra_deg: float, dec_deg: float,
                      pixel_scale_arcsec: float, extra_header: dict | None = None) -> None:
    """Write a (band, y, x) cube as a FITS primary HDU with WCS and band keywords, atomically."""
    if pixels.ndim != 3 or pixels.shape[0] != len(bands):
        raise ValueError(f"{path}: cube of shape {pixels.shape} does not hold bands {bands!r}")
    header = cutout_wcs(ra_deg, dec_deg, pixel_scale_arcsec, pixels.shape[-1]).to_header()
    header["BANDS"] = bands
    for k, band in enumerate(bands):
        header[f"BAND{k}"] = band
    header["PIXSCALE"] = (pixel_scale_arcsec, "arcsec/pixel")
    for key, value in (extra_header or {}).items():
        header[key] = value
    hdu = fits.PrimaryHDU(np.asarray(pixels, dtype=np.float32), header=header)
    atomic_write(Path(path), lambda tmp: hdu.writeto(tmp, overwrite=True, output_verify="exception"))


def _bands_from_header(header: Mapping, n_planes: int) -> str:
    if "BANDS" in header:
        return str(header["BANDS"]).strip()
    names = [header.get(f"BAND{k}") for k in range(n_planes)]
    return "".join(names) if all(names) else ""


def read_cutout(path, expected_bands: str | None = None,
                expected_shape: tuple[int, int] | None = None) -> Cutout:
    """Read and validate a FITS, JPEG or PNG cutout.

    Raises CutoutError (naming `path`) for a missing, corrupt or truncated file, a cube without
    the expected bands or shape, or non-finite pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise CutoutError(path, "file not found")
    name = path.name.lower()
    if name.endswith(FITS_SUFFIXES):
        cutout = _read_fits(path)
    elif name.endswith(IMAGE_SUFFIXES):
        cutout = _read_colour_image(path)
    else:
        raise CutoutError(path, f"unknown cutout format (expected one of {FITS_SUFFIXES + IMAGE_SUFFIXES})")
    validate_cutout(path, cutout, expected_bands, expected_shape)
    return cutout


def _read_fits(path: Path) -> Cutout:
    # CFITSIO through fitsio: 0.43 ms a file where astropy took 0.97 (bench/predict_reader.py), and
    # reading bounds `galpipe predict` on a folder of cutouts. The header becomes a plain mapping of
    # its keywords; Cutout.wcs turns it into an astropy header only when a WCS is asked for.
    import fitsio

    try:
        with fitsio.FITS(str(path)) as hdus:
            hdu = next((h for h in hdus if h.has_data() and h.get_exttype() in IMAGE_HDU_TYPES), None)
            if hdu is None:
                raise CutoutError(path, "FITS file holds no image data")
            data = np.asarray(hdu.read(), dtype=np.float32)
            header = {r["name"]: r["value"] for r in hdu.read_header().records()
                      if r.get("name") and r["name"] not in ("COMMENT", "HISTORY", "")}
    except CutoutError:
        raise
    except (OSError, ValueError, TypeError) as err:
        reason = " ".join(line for line in str(err).splitlines()[:2] if line.strip())
        raise CutoutError(path, f"corrupt or truncated FITS ({reason})") from None
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3:
        raise CutoutError(path, f"expected an image or a (band, y, x) cube, got shape {data.shape}")
    bands = _bands_from_header(header, data.shape[0])
    if bands and len(bands) != data.shape[0]:
        raise CutoutError(path, f"the header names {len(bands)} band(s) {bands!r} for {data.shape[0]} image plane(s)")
    return Cutout(path, data, bands, header)


def _read_colour_image(path: Path) -> Cutout:
    try:
        with warnings.catch_warnings(), Image.open(path) as image:
            # Pillow only warns between MAX_IMAGE_PIXELS (89 Mpixel) and twice that: no cutout is so big.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()  # decodes everything now, so a truncated file fails here
            if image.mode.startswith("I;16") or image.mode == "I":  # 16-bit grey: scaled, not clipped at 255
                grey = np.asarray(image, dtype=np.float32) / 65535.0
                rgb = np.repeat(np.clip(grey, 0, 1)[..., None], 3, axis=-1)
            elif image.mode == "F":
                raise CutoutError(path, "floating-point image: give floating-point pixels as FITS")
            else:
                rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except CutoutError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise CutoutError(path, f"image too large to be a cutout ({err})") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise CutoutError(path, f"corrupt or truncated image ({err})") from None
    return Cutout(path, np.moveaxis(rgb, -1, 0).copy(), COLOUR_BANDS)


def validate_cutout(path, cutout: Cutout, expected_bands: str | None = None,
                    expected_shape: tuple[int, int] | None = None) -> None:
    pixels = cutout.pixels
    if expected_bands:
        _require_bands(path, cutout.bands, expected_bands)
    if expected_shape is not None and tuple(pixels.shape[-2:]) != tuple(expected_shape):
        raise CutoutError(path, f"wrong shape {tuple(pixels.shape[-2:])}, expected {tuple(expected_shape)}")
    if min(pixels.shape[-2:]) < 8:
        raise CutoutError(path, f"image too small ({pixels.shape[-2]}x{pixels.shape[-1]} pixels)")
    bad = ~np.isfinite(pixels)
    if bad.any():
        raise CutoutError(path, f"{int(bad.sum())} non-finite (NaN or inf) pixel(s)")


def _require_bands(path, present: str, wanted: str) -> None:
    missing = [b for b in wanted if b not in present]
    if missing:
        raise CutoutError(path, f"missing band(s) {''.join(missing)!r} (has {present or 'none named'!r})")


def select_bands(cutout: Cutout, bands: str) -> np.ndarray:
    """The planes of `bands`, in that order; a CutoutError names the file when one is missing."""
    _require_bands(cutout.path, cutout.bands, bands)
    return np.stack([cutout.pixels[cutout.bands.index(b)] for b in bands])


def quarantine(path: Path, quarantine_dir: Path) -> Path:
    """Move a bad file we own out of the way (kept for inspection, never deleted)."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    target = quarantine_dir / path.name
    shutil.move(str(path), target)
    return target


def validate_manifest(manifest, expected_bands: str | None, expected_shape: tuple[int, int] | None = None,
                      quarantine_dir: Path | None = None, warn=None):
    """Open every cutout marked ok and check it; a bad one becomes 'quarantined' with its reason
    (and, when `quarantine_dir` is given, is moved there: only for files galpipe owns).

    Rows with `validated` true were checked in memory by whoever wrote them (the renderer) and
    are not read again. Returns the manifest with `status`, `reason`, `bands`, `height_px`,
    `width_px` filled in.
    """
    manifest = manifest.copy()
    for column, default in (("bands", ""), ("height_px", 0), ("width_px", 0), ("validated", False)):
        if column not in manifest:
            manifest[column] = default
    for i, row in manifest.iterrows():
        if row.status != "ok" or row.validated:
            continue
        try:
            cutout = read_cutout(row.path, expected_bands, expected_shape)
        except CutoutError as err:
            moved = quarantine(Path(row.path), quarantine_dir) if quarantine_dir and Path(row.path).is_file() else None
            manifest.loc[i, ["status", "reason"]] = ["quarantined", err.reason]
            if moved:
                manifest.loc[i, "path"] = str(moved)
            if warn:
                warn(f"quarantined {err}")
            continue
        manifest.loc[i, ["bands", "height_px", "width_px", "validated"]] = [cutout.bands, *cutout.pixels.shape[-2:], True]
    return manifest


def remove_stale_files(out_dir: Path, manifest) -> None:
    """Drop cutouts a previous materialization left in `out_dir` that this one did not make
    (idempotence), and temporary files an interrupted write left."""
    current = set(manifest.path)
    for path in Path(out_dir).glob("*.fits"):
        if str(path) not in current:
            path.unlink()
    for partial in Path(out_dir).glob(".*.part"):
        partial.unlink()
