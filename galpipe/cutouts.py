"""Cutout files: FITS cubes (band, y, x) with a celestial WCS, the layout the Legacy Survey
viewer serves, and the colour JPEG/PNG images that Galaxy Zoo shows. Reading validates a
cutout and raises CutoutError naming the file and what is wrong with it.

A survey's own cutouts are stored in stacks, many galaxies to a file (`*.stack.fits`): a survey
of 10^8 galaxies cannot live as 10^8 files, and opening a file costs more than reading a cutout.
A stack's image HDU CUTOUTS holds every cutout's (band, y, x) pixels one after another, as float32;
its table GALAXIES gives each galaxy's object_id, where its pixels start, its size and WCS centre,
and its own keywords. One galaxy of a stack is addressed as `<file>.stack.fits#<row>`, and reads
as a Cutout like any single file.
"""

from __future__ import annotations

import functools
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image, UnidentifiedImageError

from galpipe.files import atomic_write

FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fits.fz")
STACK_SUFFIX = ".stack.fits"
STACK_IMAGE_HDU, STACK_TABLE_HDU = "CUTOUTS", "GALAXIES"
FITS_BLOCK_BYTES = 2880
# A stack table's columns that place each cutout; any other column is one of its own keywords.
STACK_PLACEMENT_COLUMNS = ("OBJECT_ID", "PIXEL_OFFSET", "HEIGHT_PX", "WIDTH_PX", "CRVAL1", "CRVAL2", "CRPIX1",
                           "CRPIX2")
# Keywords that describe an HDU's layout or checksum, not the cutout: left out of a Cutout's header.
STRUCTURAL_KEYWORDS = {"SIMPLE", "XTENSION", "BITPIX", "EXTEND", "PCOUNT", "GCOUNT", "EXTNAME", "COMMENT",
                       "HISTORY", "BSCALE", "BZERO", "CHECKSUM", "DATASUM", ""}
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


def stack_address(path, row: int) -> str:
    """How one galaxy of a stack is named, wherever a cutout's path goes (manifests, catalogues)."""
    return f"{path}#{row}"


def split_address(address) -> tuple[Path, int | None]:
    """(file, row in the stack) of a cutout's address; row None for a file of its own."""
    text = str(address)
    head, sep, tail = text.rpartition("#")
    if sep and tail.isascii() and tail.isdigit() and head.lower().endswith(STACK_SUFFIX):
        return _stack_path(head), int(tail)
    return Path(text), None


@functools.lru_cache(maxsize=64)
def _stack_path(text: str) -> Path:
    return Path(text)  # one Path per stack file, not one per galaxy (each costs ~10 us)


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


def write_cutout_stack(path: Path, object_ids, cubes, bands: str, ra_deg, dec_deg, pixel_scale_arcsec: float,
                       header: dict | None = None, row_keywords: dict[str, list] | None = None) -> None:
    """Write many (band, y, x) cubes as one stack file, atomically: `header` holds the keywords
    they share (SURVEY, MAGZERO, ...), `row_keywords` each galaxy's own (a list per keyword).
    Cubes may differ in size: each takes its own pixels, one after another, nothing padded."""
    cubes = [np.asarray(c, dtype=np.float32) for c in cubes]
    object_ids = [str(i) for i in object_ids]
    lengths = {"object_ids": len(object_ids), "cubes": len(cubes), "ra_deg": len(ra_deg), "dec_deg": len(dec_deg),
               **{key: len(values) for key, values in (row_keywords or {}).items()}}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{path}: one of each per galaxy, got {lengths}")
    if not cubes:
        raise ValueError(f"{path}: no cutouts to stack")
    for object_id, cube in zip(object_ids, cubes):
        if cube.ndim != 3 or cube.shape[0] != len(bands) or min(cube.shape) == 0:
            raise ValueError(f"{path}: cube of {object_id} has shape {cube.shape}, which does not hold bands {bands!r}")
    heights, widths = np.array([c.shape[1] for c in cubes]), np.array([c.shape[2] for c in cubes])
    image = fits.ImageHDU(np.concatenate([c.ravel() for c in cubes]), name=STACK_IMAGE_HDU)
    # The WCS every cutout shares (north up, east left, this scale); its centre is in the table.
    template = cutout_wcs(0.0, 0.0, pixel_scale_arcsec, 1).to_header()
    for key in ("CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2"):
        del template[key]
    image.header.update(template)
    image.header["BANDS"] = bands
    for k, band in enumerate(bands):
        image.header[f"BAND{k}"] = band
    image.header["PIXSCALE"] = (pixel_scale_arcsec, "arcsec/pixel")
    for key, value in (header or {}).items():
        image.header[key] = value
    columns = [fits.Column("OBJECT_ID", f"{max(map(len, object_ids))}A", array=np.array(object_ids)),
               fits.Column("PIXEL_OFFSET", "K", array=np.concatenate([[0], np.cumsum(len(bands) * heights * widths)[:-1]])),
               fits.Column("HEIGHT_PX", "J", array=heights),
               fits.Column("WIDTH_PX", "J", array=widths),
               fits.Column("CRVAL1", "D", unit="deg", array=np.asarray(ra_deg, dtype=float)),
               fits.Column("CRVAL2", "D", unit="deg", array=np.asarray(dec_deg, dtype=float)),
               fits.Column("CRPIX1", "D", array=(widths + 1) / 2),
               fits.Column("CRPIX2", "D", array=(heights + 1) / 2)]
    for key, values in (row_keywords or {}).items():
        values = np.asarray(values)
        form = f"{max(1, max(len(str(v)) for v in values))}A" if values.dtype.kind in "US" else \
            {"b": "L", "i": "K", "u": "K", "f": "D"}[values.dtype.kind]
        columns.append(fits.Column(key, form, array=values))
    hdus = fits.HDUList([fits.PrimaryHDU(), image, fits.BinTableHDU.from_columns(columns, name=STACK_TABLE_HDU)])
    atomic_write(Path(path), lambda tmp: hdus.writeto(tmp, overwrite=True, output_verify="exception"))


@dataclass(frozen=True)
class CutoutStack:
    """A stack file opened: every cutout's pixels one after another (memory-mapped), the keywords
    they share, and the table that places each."""

    path: Path
    pixels: np.ndarray  # 1-D; for float32 stacks a read-only view of the mapped file
    bands: str
    header: dict
    table: np.ndarray  # one record per galaxy: STACK_PLACEMENT_COLUMNS and its own keywords

    @property
    def object_ids(self) -> list[str]:
        return [str(i).rstrip() for i in self.table["OBJECT_ID"]]  # FITS pads strings with trailing spaces

    def cutout(self, row: int) -> Cutout:
        if not 0 <= row < len(self.table):
            raise CutoutError(stack_address(self.path, row), f"no row {row}: the stack holds {len(self.table)} cutout(s)")
        [cutout] = self.cutouts(row, row + 1)
        return cutout

    def cutouts(self, first_row: int, end_row: int) -> list[Cutout]:
        """The cutouts of rows first_row to end_row - 1 (a batch of neighbours: the table is
        sliced once, not looked up galaxy by galaxy)."""
        records = self.table[first_row:end_row]
        # Each galaxy's own keywords; NaN means unknown for that galaxy and is left out, as a FITS
        # header cannot hold it.
        own = {name: records[name].tolist() for name in records.dtype.names
               if name not in ("OBJECT_ID", "PIXEL_OFFSET", "HEIGHT_PX", "WIDTH_PX")}
        cutouts = []
        for k, (object_id, start, height, width) in enumerate(zip(records["OBJECT_ID"], records["PIXEL_OFFSET"].tolist(),
                                                                  records["HEIGHT_PX"].tolist(), records["WIDTH_PX"].tolist())):
            header = dict(self.header)
            for name, values in own.items():
                value = values[k].rstrip() if isinstance(values[k], str) else values[k]
                if not (isinstance(value, float) and not math.isfinite(value)):
                    header[name] = value
            header["OBJID"] = str(object_id).rstrip()
            shape = (len(self.bands), height, width)
            # Native float32, a galaxy at a time: its copy is still in cache for the checks that follow.
            pixels = self.pixels[start:start + len(self.bands) * height * width].astype(np.float32).reshape(shape)
            cutouts.append(Cutout(Path(stack_address(self.path, first_row + k)), pixels, self.bands, header))
        return cutouts


def read_stack(path) -> CutoutStack:
    """A stack file, opened once and kept while it is unchanged (the last eight opened): its
    galaxies are read a run of neighbouring rows at a time (CutoutStack.cutouts), by the
    model-input builder, the checks and `galpipe predict`. A changed file is opened again; galpipe
    replaces files whole (atomic_write: a new inode), so a mapping never sees a file shrink under it."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        raise CutoutError(path, "file not found") from None
    return _read_stack(path, stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_stack(path: Path, device: int, inode: int, mtime_ns: int, size_bytes: int) -> CutoutStack:
    import fitsio

    if size_bytes % FITS_BLOCK_BYTES:  # CFITSIO lists the HDUs it finds and says nothing of the rest
        raise CutoutError(path, f"corrupt or truncated cutout stack ({size_bytes} bytes: not whole "
                                f"{FITS_BLOCK_BYTES}-byte FITS blocks)")
    try:
        with fitsio.FITS(str(path)) as hdus:
            names = {h.get_extname() for h in hdus}
            missing = [n for n in (STACK_IMAGE_HDU, STACK_TABLE_HDU) if n not in names]
            if missing:
                raise CutoutError(path, f"not a cutout stack, or a truncated one: no HDU {', '.join(missing)}")
            image = hdus[STACK_IMAGE_HDU]
            keywords = _keywords(image)
            n_pixels = int(np.prod([int(n) for n in image.get_dims()]))
            data_start = image.get_offsets()["data_start"]
            # Plain big-endian float32 (as galpipe writes them) is mapped, not read: a galaxy costs
            # only its own bytes, wherever it sits. Anything else (scaled integers, compressed) is read whole.
            mappable = (keywords.get("BITPIX") == -32 and keywords.get("BSCALE", 1) == 1 and keywords.get("BZERO", 0) == 0
                        and not image.is_compressed())
            pixels = None if mappable else np.asarray(image.read(), dtype=np.float32).ravel()
            header = {k: v for k, v in keywords.items() if k not in STRUCTURAL_KEYWORDS and not k.startswith("NAXIS")}
            table = hdus[STACK_TABLE_HDU].read()
    except CutoutError:
        raise
    except (OSError, ValueError, TypeError) as err:
        raise CutoutError(path, f"corrupt or truncated cutout stack ({_cfitsio_reason(err)})") from None
    if pixels is None:
        if data_start + 4 * n_pixels > size_bytes:  # mapped pages past the end would kill the process
            raise CutoutError(path, f"corrupt or truncated cutout stack ({size_bytes} bytes, the image needs more)")
        # A plain array over the mapping: its slices, one per galaxy, skip np.memmap's bookkeeping.
        pixels = np.memmap(path, dtype=">f4", mode="r", offset=data_start, shape=(n_pixels,)).view(np.ndarray)
    missing = [c for c in STACK_PLACEMENT_COLUMNS if c not in (table.dtype.names or ())]
    if missing:
        raise CutoutError(path, f"the {STACK_TABLE_HDU} table lacks column(s) {missing}")
    bands = _bands_from_header(header, 0)
    if not bands:
        raise CutoutError(path, "the stack's header names no bands (BANDS)")
    sizes = len(bands) * table["HEIGHT_PX"].astype(np.int64) * table["WIDTH_PX"].astype(np.int64)
    bad = np.flatnonzero((table["HEIGHT_PX"] <= 0) | (table["WIDTH_PX"] <= 0) | (table["PIXEL_OFFSET"] < 0)
                         | (table["PIXEL_OFFSET"] + sizes > n_pixels))
    if len(bad):
        raise CutoutError(path, f"row(s) {bad[:5].tolist()} of {STACK_TABLE_HDU} place pixels outside the "
                                f"{n_pixels} of {STACK_IMAGE_HDU}")
    return CutoutStack(path, pixels, bands, header, table)


def _keywords(hdu) -> dict:
    """A fitsio HDU's header as a plain mapping of its named keywords (COMMENT and HISTORY left out)."""
    return {r["name"]: r["value"] for r in hdu.read_header().records()
            if r.get("name") and r["name"] not in ("COMMENT", "HISTORY")}


def _cfitsio_reason(err: Exception) -> str:
    """The first two lines of a CFITSIO error: its message, without the error stack that follows."""
    return " ".join(line for line in str(err).splitlines()[:2] if line.strip())


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
    file, row = split_address(path)
    path = Path(path)
    if row is not None:
        cutout = read_stack(file).cutout(row)
        validate_cutout(path, cutout, expected_bands, expected_shape)
        return cutout
    if not path.is_file():
        raise CutoutError(path, "file not found")
    name = path.name.lower()
    if name.endswith(STACK_SUFFIX):
        raise CutoutError(path, f"a stack of cutouts: name one of them as {path}#<row>")
    if name.endswith(FITS_SUFFIXES):
        cutout = _read_fits(path)
    elif name.endswith(IMAGE_SUFFIXES):
        cutout = _read_colour_image(path)
    else:
        raise CutoutError(path, f"unknown cutout format (expected one of {FITS_SUFFIXES + IMAGE_SUFFIXES})")
    validate_cutout(path, cutout, expected_bands, expected_shape)
    return cutout


def read_cutouts(addresses, expected_bands: str | None = None, expected_shape: tuple[int, int] | None = None,
                 object_ids=None) -> list[Cutout | CutoutError]:
    """read_cutout for many: each a Cutout, or the CutoutError that names it. Neighbouring rows of
    one stack are read together (CutoutStack.cutouts). With `object_ids` (one per address), a
    galaxy of a stack must be that object: an address is a row number, and a stack written again
    since the address was made may hold another galaxy there."""
    addresses = list(addresses)
    object_ids = [None] * len(addresses) if object_ids is None else list(object_ids)
    if len(object_ids) != len(addresses):
        raise ValueError(f"{len(addresses)} addresses but {len(object_ids)} object ids")
    placed = [split_address(address) for address in addresses]
    cutouts: list[Cutout | CutoutError] = []
    k = 0
    while k < len(addresses):
        file, row = placed[k]
        if row is None:
            try:
                cutouts.append(read_cutout(addresses[k], expected_bands, expected_shape))
            except CutoutError as err:
                cutouts.append(err)
            k += 1
            continue
        n = 1
        while k + n < len(addresses) and placed[k + n] == (file, row + n):
            n += 1
        for address, object_id, cutout in zip(addresses[k:k + n], object_ids[k:k + n], _read_rows(file, row, n)):
            try:
                if isinstance(cutout, CutoutError):
                    raise cutout
                validate_cutout(cutout.path, cutout, expected_bands, expected_shape)
                # Only a galaxy of a stack can have moved (its stack written again since the address was made);
                # every one has its OBJID (CutoutStack.cutouts).
                found = cutout.header["OBJID"]
                if object_id is not None and found != str(object_id):
                    raise CutoutError(address, f"holds galaxy {found}, not {object_id}: the stack was written again "
                                               "since this address was made (materialize the raw cutouts again)")
                cutouts.append(cutout)
            except CutoutError as err:
                cutouts.append(err)
        k += n
    return cutouts


def _read_rows(file: Path, first_row: int, n: int) -> list[Cutout | CutoutError]:
    """Rows first_row .. first_row + n - 1 of a stack, unvalidated: read as one when all exist."""
    try:
        stack = read_stack(file)
    except CutoutError as err:
        return [err] * n
    if first_row + n <= len(stack.table):
        return stack.cutouts(first_row, first_row + n)
    read = []
    for row in range(first_row, first_row + n):
        try:
            read.append(stack.cutout(row))
        except CutoutError as err:
            read.append(err)
    return read


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
            header = _keywords(hdu)
    except CutoutError:
        raise
    except (OSError, ValueError, TypeError) as err:
        raise CutoutError(path, f"corrupt or truncated FITS ({_cfitsio_reason(err)})") from None
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
        with Image.open(path) as image:
            # Pillow refuses twice MAX_IMAGE_PIXELS (89 Mpixel) and only warns below: no cutout is so
            # big. Checked here, not with a warnings filter, which is not safe in galpipe predict's threads.
            if image.width * image.height > Image.MAX_IMAGE_PIXELS:
                raise CutoutError(path, f"image too large to be a cutout ({image.width}x{image.height} pixels)")
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
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:  # the warning: where warnings are errors
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
    """The planes of `bands`, in that order; a CutoutError names the file when one is missing.
    The cutout's own array when it holds just those, in that order (not a copy: never write to it)."""
    if cutout.bands == bands:
        return cutout.pixels
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
            # A galaxy of a stack stays where it is: the stack holds others that are fine.
            single_file = split_address(row.path)[1] is None and Path(row.path).is_file()
            moved = quarantine(Path(row.path), quarantine_dir) if quarantine_dir and single_file else None
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
    current = {str(split_address(address)[0]) for address in manifest.path}
    for path in Path(out_dir).glob("*.fits"):
        if str(path) not in current:
            path.unlink()
    for partial in Path(out_dir).glob(".*.part"):
        partial.unlink()
