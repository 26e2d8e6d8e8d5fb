"""Cutout files: FITS with WCS round trip, and every kind of bad cutout named and quarantined."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord
from PIL import Image

from galpipe.cutouts import (
    CutoutError,
    read_cutout,
    read_cutouts,
    read_stack,
    split_address,
    stack_address,
    validate_manifest,
    write_cutout_fits,
    write_cutout_stack,
)
from galpipe.files import atomic_write


def _cube(shape=(3, 33, 33), seed=0):
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


def test_fits_cutout_round_trip_with_wcs(tmp_path):
    path = tmp_path / "g.fits"
    write_cutout_fits(path, _cube(), "gri", ra_deg=30.5, dec_deg=-1.25, pixel_scale_arcsec=0.263)
    cutout = read_cutout(path, expected_bands="gri", expected_shape=(33, 33))
    assert cutout.bands == "gri" and cutout.pixels.shape == (3, 33, 33)
    centre = cutout.wcs.pixel_to_world(16, 16)
    assert centre.separation(SkyCoord(30.5, -1.25, unit="deg")).arcsec < 1e-6
    # One pixel east (RA increases) is one pixel to the left.
    east = cutout.wcs.pixel_to_world(15, 16)
    assert east.ra.deg > 30.5 and east.separation(centre).arcsec == pytest.approx(0.263, rel=1e-3)


def test_a_stack_holds_many_cutouts_each_read_back_exactly_with_its_wcs_and_keywords(tmp_path):
    path = tmp_path / "chunk.stack.fits"
    cubes = [_cube((3, 33, 33), 1), _cube((3, 21, 21), 2), _cube((3, 40, 40), 3)]  # sizes differ
    write_cutout_stack(path, ["a", "bb", "c"], cubes, "gri", [30.5, 30.6, 30.7], [-1.25, -1.0, 2.0], 0.263,
                       {"SURVEY": "des", "MAGZERO": 30.0}, {"PSFFWHM1": [0.9, 1.1, 1.3], "FIELD": ["x", "yy", "z"]})
    assert read_stack(path).object_ids == ["a", "bb", "c"]
    for row, (cube, ra_deg, dec_deg, fwhm) in enumerate(zip(cubes, [30.5, 30.6, 30.7], [-1.25, -1.0, 2.0],
                                                            [0.9, 1.1, 1.3])):
        address = stack_address(path, row)
        assert split_address(address) == (path, row)
        cutout = read_cutout(address, expected_bands="gri", expected_shape=cube.shape[1:])
        np.testing.assert_array_equal(cutout.pixels, cube)
        assert cutout.header["SURVEY"] == "des" and cutout.header["MAGZERO"] == 30.0
        assert cutout.header["PSFFWHM1"] == fwhm and cutout.header["PIXSCALE"] == 0.263
        assert cutout.header["OBJID"] == ["a", "bb", "c"][row] and cutout.header["FIELD"] == ["x", "yy", "z"][row]
        # The same WCS as a file of its own: centred on the galaxy, east to the left.
        alone = tmp_path / f"alone{row}.fits"
        write_cutout_fits(alone, cube, "gri", ra_deg, dec_deg, 0.263)
        for x, y in ((0, 0), (cube.shape[2] - 1, 3)):
            assert cutout.wcs.pixel_to_world(x, y).separation(read_cutout(alone).wcs.pixel_to_world(x, y)).arcsec < 1e-9
    # Nothing padded: the file holds the pixels (and a few FITS blocks of headers and table).
    assert path.stat().st_size < sum(c.nbytes for c in cubes) + 6 * 2880
    # A file of its own is not mistaken for a stack, even with "#" in its name.
    assert split_address(tmp_path / "odd#3.fits") == (tmp_path / "odd#3.fits", None)


def test_reading_many_gives_what_reading_one_by_one_gives_in_any_order_and_mix(tmp_path):
    first, second = tmp_path / "one.stack.fits", tmp_path / "two.stack.fits"
    cubes = [_cube((3, size, size), k) for k, size in enumerate((20, 21, 60, 60, 24))]
    write_cutout_stack(first, list("abcde"), cubes, "gri", [1] * 5, [0] * 5, 0.4)
    write_cutout_stack(second, ["f"], [_cube(seed=9)], "gri", [2], [0], 0.4)
    single = tmp_path / "g.fits"
    write_cutout_fits(single, _cube(seed=7), "gri", 3, 0, 0.4)
    # What the model-input builder and galpipe predict read through, against one by one (a guard for
    # any batched reader): rows out of order, one the stack lacks, a file of its own, another stack,
    # a missing stack.
    # Runs of neighbouring rows, read together: one that runs past the table's end, and two rows
    # of the missing stack.
    addresses = [stack_address(first, r) for r in (1, 0, 9)] + [single] + \
        [stack_address(first, r) for r in (0, 4)] + [stack_address(second, 0)] + \
        [stack_address(first, r) for r in (3, 2)] + [stack_address(tmp_path / "gone.stack.fits", r) for r in (0, 1)] + \
        [stack_address(first, r) for r in (2, 3, 4, 5)]
    many = read_cutouts(addresses)
    for address, cutout in zip(addresses, many, strict=True):
        try:
            alone = read_cutout(address)
        except CutoutError as err:
            assert isinstance(cutout, CutoutError) and cutout.reason == err.reason and cutout.path == err.path
            continue
        np.testing.assert_array_equal(cutout.pixels, alone.pixels)
        assert cutout.pixels.dtype == np.float32 and cutout.header == alone.header and str(cutout.path) == str(address)
    assert [c.header.get("OBJID") for c in many if not isinstance(c, CutoutError)] == \
        list("ba") + [None] + list("aefdccde")
    # A galaxy that moved in the middle of a run is named; its neighbours are read.
    moved = read_cutouts([stack_address(first, r) for r in range(3)], object_ids=["a", "x", "c"])
    assert [c.header["OBJID"] for c in (moved[0], moved[2])] == ["a", "c"] and "holds galaxy b, not x" in str(moved[1])


def test_a_stack_keeps_leading_spaces_of_ids_and_leaves_out_keywords_unknown_for_a_galaxy(tmp_path):
    path = tmp_path / "odd.stack.fits"
    write_cutout_stack(path, [" 42", "43"], [_cube(), _cube(seed=1)], "gri", [1, 2], [0, 0], 0.4,
                       row_keywords={"PSFFWHM1": [np.nan, 1.2]})
    assert read_stack(path).object_ids == [" 42", "43"]
    [first, second] = read_cutouts([stack_address(path, 0), stack_address(path, 1)], object_ids=[" 42", "43"])
    assert first.header["OBJID"] == " 42" and "PSFFWHM1" not in first.header and second.header["PSFFWHM1"] == 1.2
    assert first.wcs is not None  # a header astropy accepts


def test_a_bad_stack_or_row_is_an_error_naming_it(tmp_path):
    path = tmp_path / "chunk.stack.fits"
    write_cutout_stack(path, ["a", "b"], [_cube(), _cube(seed=1)], "gri", [1, 2], [0, 0], 0.4)
    with pytest.raises(CutoutError, match=r"chunk\.stack\.fits#2: no row 2: the stack holds 2"):
        read_cutout(stack_address(path, 2))
    with pytest.raises(CutoutError, match=r"chunk\.stack\.fits: a stack of cutouts: name one of them as"):
        read_cutout(path)
    with pytest.raises(CutoutError, match="missing band"):
        read_cutout(stack_address(path, 0), expected_bands="griz")
    path.write_bytes(path.read_bytes()[:5000])  # damaged after it was read once: not served from memory
    with pytest.raises(CutoutError, match=r"chunk\.stack\.fits: corrupt or truncated cutout stack"):
        read_cutout(stack_address(path, 1))
    # An address whose stack was written again holds another galaxy: named, not read as this one.
    path = tmp_path / "again.stack.fits"
    write_cutout_stack(path, ["a", "b"], [_cube(), _cube(seed=1)], "gri", [1, 2], [0, 0], 0.4)
    [right, wrong] = read_cutouts([stack_address(path, 1), stack_address(path, 0)], object_ids=["b", "b"])
    assert right.header["OBJID"] == "b" and isinstance(wrong, CutoutError) and "holds galaxy a, not b" in str(wrong)
    # A table that places a galaxy's pixels beyond the image is refused before anything is mapped.
    from astropy.io import fits
    with fits.open(path) as hdus:
        hdus["GALAXIES"].data["PIXEL_OFFSET"][1] = 10**6
        hdus.writeto(tmp_path / "misplaced.stack.fits")
    with pytest.raises(CutoutError, match=r"row\(s\) \[1\] of GALAXIES place pixels outside"):
        read_cutout(stack_address(tmp_path / "misplaced.stack.fits", 0))
    single = tmp_path / "single.stack.fits"
    write_cutout_fits(single, _cube(), "gri", 1, 0, 0.4)  # a single cutout named like a stack
    with pytest.raises(CutoutError, match="not a cutout stack, or a truncated one: no HDU CUTOUTS, GALAXIES"):
        read_cutout(stack_address(single, 0))


def _bad_files(tmp_path):
    """Each bad cutout with the words its error must contain."""
    good = tmp_path / "good.fits"
    write_cutout_fits(good, _cube(), "gri", 30.0, 0.0, 0.396)
    cases = {}
    corrupt = tmp_path / "corrupt.fits"
    corrupt.write_bytes(b"this is not a FITS file" * 200)
    cases[corrupt] = "corrupt or truncated FITS"
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(good.read_bytes()[:4000])
    cases[truncated] = "corrupt or truncated FITS"
    nan = tmp_path / "nan.fits"
    cube = _cube()
    cube[1, 5, 5] = np.nan
    write_cutout_fits(nan, cube, "gri", 30.0, 0.0, 0.396)
    cases[nan] = "non-finite"
    missing_band = tmp_path / "missing_band.fits"
    write_cutout_fits(missing_band, _cube((2, 33, 33)), "gr", 30.0, 0.0, 0.396)
    cases[missing_band] = "missing band(s) 'i'"
    wrong_shape = tmp_path / "wrong_shape.fits"
    write_cutout_fits(wrong_shape, _cube((3, 41, 41)), "gri", 30.0, 0.0, 0.396)
    cases[wrong_shape] = "wrong shape (41, 41)"
    jpeg = tmp_path / "broken.jpg"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 50)
    cases[jpeg] = "corrupt or truncated image"
    png = tmp_path / "truncated.png"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8) + 100).save(png)
    png.write_bytes(png.read_bytes()[:60])
    cases[png] = "corrupt or truncated image"
    cases[tmp_path / "absent.fits"] = "file not found"
    return good, cases


def test_each_bad_cutout_is_named_with_its_fault(tmp_path):
    good, cases = _bad_files(tmp_path)
    read_cutout(good, "gri", (33, 33))
    for path, words in cases.items():
        with pytest.raises(CutoutError) as raised:
            read_cutout(path, "gri", (33, 33))
        assert str(path) in str(raised.value) and words in str(raised.value), str(raised.value)


def test_validate_manifest_quarantines_bad_cutouts_and_keeps_the_good(tmp_path):
    good, cases = _bad_files(tmp_path)
    paths = [good] + [p for p in cases if p.exists()]
    manifest = pd.DataFrame({"object_id": [p.stem for p in paths], "path": [str(p) for p in paths],
                             "status": "ok", "reason": ""})
    warnings = []
    checked = validate_manifest(manifest, "gri", (33, 33), tmp_path / "quarantine", warn=warnings.append)
    assert checked.status.tolist() == ["ok"] + ["quarantined"] * (len(paths) - 1)
    assert len(warnings) == len(paths) - 1 and all("quarantined" in w for w in warnings)
    # Nothing is lost: each bad file is moved, not deleted, and the manifest says where.
    for row in checked.iloc[1:].itertuples():
        assert "quarantine" in row.path and (tmp_path / "quarantine" / row.path.split("/")[-1]).is_file()
    assert good.is_file() and checked.height_px.iloc[0] == 33


def test_user_files_are_reported_but_never_moved(tmp_path):
    _, cases = _bad_files(tmp_path)
    nan = next(p for p in cases if p.name == "nan.fits")
    manifest = pd.DataFrame({"object_id": ["x"], "path": [str(nan)], "status": "ok", "reason": ""})
    checked = validate_manifest(manifest, "gri", None, quarantine_dir=None)
    assert checked.status.item() == "quarantined" and nan.is_file()


def test_interrupted_write_leaves_no_file_that_looks_complete(tmp_path):
    path = tmp_path / "out.fits"

    def write_half_then_fail(tmp):
        with open(tmp, "wb") as f:
            f.write(b"SIMPLE  =                    T")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, write_half_then_fail)
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_the_mode_the_umask_gives_not_owner_only(tmp_path):
    umask = os.umask(0o027)  # a group-readable set-up
    try:
        atomic_write(tmp_path / "table.csv", lambda tmp: Path(tmp).write_text("a\n1\n"))
    finally:
        os.umask(umask)
    assert (tmp_path / "table.csv").stat().st_mode & 0o777 == 0o640  # mkstemp alone gives 0o600


def test_a_stack_of_integer_pixels_is_read_too(tmp_path):
    """galpipe's stacks are float32 and memory-mapped; a stack someone wrote in scaled integers is
    read whole, with the same result."""
    from astropy.io import fits

    path = tmp_path / "ints.stack.fits"
    write_cutout_stack(path, ["a", "b"], [np.full((3, 20, 20), 7.0, np.float32), np.full((3, 20, 20), 9.0, np.float32)],
                       "gri", [1, 2], [0, 0], 0.4)
    with fits.open(path) as hdus:
        hdus["CUTOUTS"].data = hdus["CUTOUTS"].data.astype(np.int16)
        hdus["CUTOUTS"].scale("int16", bscale=0.5)
        hdus.writeto(tmp_path / "scaled.stack.fits")
    cutout = read_cutout(stack_address(tmp_path / "scaled.stack.fits", 1), expected_bands="gri")
    assert cutout.pixels.dtype == np.float32 and np.all(cutout.pixels == 9.0)


def test_a_bad_galaxy_of_a_stack_is_quarantined_in_place(tmp_path):
    """The stack holds other galaxies that are fine: the bad one is marked, the file stays."""
    path = tmp_path / "chunk.stack.fits"
    nan = _cube(seed=1)
    nan[0, 3, 3] = np.nan
    write_cutout_stack(path, ["good", "nan"], [_cube(), nan], "gri", [1, 2], [0, 0], 0.4)
    manifest = pd.DataFrame({"object_id": ["good", "nan"], "path": [stack_address(path, 0), stack_address(path, 1)],
                             "status": "ok", "reason": ""})
    checked = validate_manifest(manifest, "gri", (33, 33), tmp_path / "quarantine")
    assert checked.status.tolist() == ["ok", "quarantined"] and "non-finite" in checked.reason[1]
    assert checked.path[1] == stack_address(path, 1) and path.is_file() and not (tmp_path / "quarantine").exists()
