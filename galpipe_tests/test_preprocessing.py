"""Raw cutouts to 69x69 model inputs: the same field in both surveys, FITS and colour images
alike, bad cutouts counted."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from galpipe.cutouts import Cutout, CutoutError, read_cutouts, write_cutout_fits
from galpipe.framing import CentralFraction
from galpipe.gallery import _draw_model_field
from galpipe.instruments import DES, SDSS
from galpipe.preprocessing import (
    build_model_inputs,
    field_box,
    load_model_inputs,
    median_last_axis,
    model_input,
    model_inputs,
    stacked_model_inputs,
)
from galpipe.resampling import resample_into
from galpipe.simulation.render import render_galaxy
from galpipe.sources.simulated import _truth


def test_the_same_galaxy_gives_similar_inputs_in_both_surveys(tmp_path, sdss_catalog):
    galaxy = _truth(sdss_catalog.sort_values("mag_r").iloc[0].to_dict())
    inputs = {}
    for instrument in (SDSS, DES):
        size = instrument.cutout_size_pixels(40)
        path = tmp_path / f"{instrument.name}.fits"
        write_cutout_fits(path, render_galaxy(galaxy, instrument, size), "gri", 30, 0, instrument.pixel_scale_arcsec)
        inputs[instrument.name] = model_input(path, field_arcsec=40)
    assert inputs["sdss"].shape == inputs["des"].shape == (3, 69, 69)
    # Same field, same normalisation: the images agree far better than two different galaxies would.
    assert np.corrcoef(inputs["sdss"].ravel(), inputs["des"].ravel())[0, 1] > 0.9
    assert inputs["des"][:, 34, 34].sum() == pytest.approx(3.0, rel=0.3)  # centre near 1 per band


def test_colour_images_and_fits_feed_the_same_model_in_colour_mode(tmp_path, decals_folder):
    png = decals_folder / "images" / "J000411.19+020924.0.png"
    from_png = model_input(png, field_arcsec=40, mode="colour", pixel_scale_arcsec=0.262)
    fits_path = tmp_path / "g.fits"
    write_cutout_fits(fits_path, np.random.default_rng(0).normal(0, 1, (3, 101, 101)).astype(np.float32) + 5,
                      "gri", 30, 0, 0.396, {"MAGZERO": 22.5})
    from_fits = model_input(fits_path, field_arcsec=40, mode="colour")
    for image in (from_png, from_fits):
        assert image.shape == (3, 69, 69) and 0 <= image.min() and image.max() <= 1
    with pytest.raises(CutoutError, match="only feed a model in mode 'colour'"):
        model_input(png, field_arcsec=40, pixel_scale_arcsec=0.262)
    with pytest.raises(CutoutError, match="pixel scale unknown"):
        model_input(png, field_arcsec=40, mode="colour")


def test_stacked_inputs_are_memory_mapped_and_failures_counted(tmp_path):
    rows = []
    for k in range(3):
        path = tmp_path / f"g{k}.fits"
        cube = np.zeros((3, 61, 61), np.float32)
        cube[:, 28:33, 28:33] = k + 1.0
        write_cutout_fits(path, cube, "gri", 30, 0, 0.396)
        rows.append((f"g{k}", str(path), "ok"))
    (tmp_path / "bad.fits").write_bytes(b"junk")
    rows += [("bad", str(tmp_path / "bad.fits"), "ok"), ("skipped", "", "quarantined")]
    manifest = pd.DataFrame(rows, columns=["object_id", "path", "status"])
    index = build_model_inputs(manifest, tmp_path / "inputs.npy", field_arcsec=24)
    assert index.status.tolist() == ["ok", "ok", "ok", "failed", "failed"]
    assert "corrupt" in index.reason.iloc[3] and index.reason.iloc[4].startswith("cutout quarantined")
    array = load_model_inputs(tmp_path / "inputs.npy")
    assert isinstance(array, np.memmap) and array.shape == (3, 3, 69, 69)


def resample(planes: np.ndarray, size: int = 69) -> np.ndarray:
    return resample_into(planes, np.empty((len(planes), size, size), np.float32))


def test_resampling_is_torchs_antialiased_bilinear():
    """galpipe's compiled resampler against the filter it reproduces, torch's antialiased bilinear:
    shrinking (a 40" DES cutout, a 424-pixel JPEG), enlarging, non-square, tiny and unchanged
    sizes. The sums run in another order, so the numbers agree to ~1e-5 of the range."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    for height, width in [(153, 153), (101, 101), (424, 424), (153, 120), (61, 61), (40, 52), (2, 3), (1, 1), (69, 69)]:
        planes = (rng.normal(size=(3, height, width)) * 100 + rng.uniform(-50, 50)).astype(np.float32)
        expected = F.interpolate(torch.from_numpy(planes)[None], size=(69, 69), mode="bilinear", antialias=True,
                                 align_corners=False)[0].numpy()
        got = resample(planes)
        assert got.shape == (3, 69, 69) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.ptp(planes), err_msg=f"{height}x{width}")
        if (height, width) == (69, 69):
            np.testing.assert_array_equal(got, planes)  # one weight of 1 per pixel
    for size in (1, 33, 100):  # other model sizes
        planes = rng.normal(size=(2, 80, 61)).astype(np.float32)
        expected = F.interpolate(torch.from_numpy(planes)[None], size=(size, size), mode="bilinear", antialias=True,
                                 align_corners=False)[0].numpy()
        np.testing.assert_allclose(resample(planes, size), expected, rtol=0, atol=2e-5 * np.ptp(planes))
    # Weights sum to one: a flat image stays flat, and the mean of a large image is kept.
    np.testing.assert_allclose(resample(np.full((1, 153, 153), 7.0, np.float32)), 7.0, rtol=1e-6)
    smooth = np.exp(-np.hypot(*(np.mgrid[:153, :153] - 76.0)) / 20)[None].astype(np.float32)
    assert resample(smooth).mean() == pytest.approx(smooth.mean(), rel=1e-3)
    # A view of a bigger array, big-endian or float64 pixels: the same numbers as a contiguous float32 copy.
    big = rng.normal(size=(3, 160, 170)).astype(np.float32)
    view = big[:, 3:156, 10:163]
    contiguous = resample(np.ascontiguousarray(view))
    for planes in (view, view.astype(">f4"), view.astype(np.float64)):
        np.testing.assert_array_equal(resample(planes), contiguous)
    # The box of a bigger array, as model inputs are made (no copy of the field first).
    np.testing.assert_array_equal(resample_into(big, np.empty((3, 69, 69), np.float32), (3, 10, 153, 153)), contiguous)
    # A transposed view (as colour images are): only its box is copied, the same numbers.
    transposed = np.ascontiguousarray(np.moveaxis(big, 0, -1)).transpose(2, 0, 1)
    np.testing.assert_array_equal(resample_into(transposed, np.empty((3, 69, 69), np.float32), (3, 10, 153, 153)),
                                  contiguous)
    for box in [(10, 20, 153, 153), (0, 0, 0, 5), (0, 0, 5, 0)]:  # past the bottom edge, nothing to resample
        with pytest.raises(ValueError, match="cannot resample"):
            resample_into(big, np.empty((3, 69, 69), np.float32), box)
    with pytest.raises(ValueError, match="cannot resample"):
        resample_into(view, np.empty((2, 69, 69), np.float32))


def test_the_resampler_compiles_where_no_cache_can_be_written(monkeypatch):
    from numba.core.dispatcher import Dispatcher

    from galpipe.resampling import compiled

    def no_locator(self):
        raise RuntimeError(f"cannot cache function {self.py_func.__name__!r}: no locator available for file")

    monkeypatch.setattr(Dispatcher, "enable_caching", no_locator)

    def twice(x):
        return 2 * x

    kernel = compiled(twice)
    assert kernel(21) == 42 and kernel._cache.__class__.__name__ == "NullCache"


def test_inputs_made_together_equal_inputs_made_one_by_one(tmp_path):
    """model_inputs resamples and normalises cutouts of one shape as a stack: the same numbers as
    one at a time, with each one that fails named in its place."""
    rng = np.random.default_rng(0)
    paths = []
    for k, size in enumerate([61, 61, 80, 61, 101, 80]):
        y, x = np.mgrid[:size, :size] - size // 2
        cube = np.exp(-np.hypot(x, y) / rng.uniform(2, 8))[None] * rng.uniform(10, 300, (3, 1, 1))
        cube = (cube + rng.normal(0, 1, (3, size, size))).astype(np.float32)
        if k == 3:
            cube[:] = -1.0  # no positive signal at the centre
        paths.append(tmp_path / f"g{k}.fits")
        write_cutout_fits(paths[-1], cube, "gri", 30, 0, 0.396)
    paths.append(tmp_path / "absent.fits")
    for mode, field in (("bands", 24.0), ("bands", None), ("colour", 24.0)):
        together = model_inputs(read_cutouts(paths), field, mode)
        for path, made in zip(paths, together):
            if path.stem in ("g3", "absent") and not (mode == "colour" and path.stem == "g3"):
                assert isinstance(made, CutoutError) and made.path == str(path)
                with pytest.raises(CutoutError, match="no positive signal" if path.stem == "g3" else "file not found"):
                    model_input(path, field, mode)
            else:
                np.testing.assert_array_equal(made, model_input(path, field, mode))
        # As one stack (what `galpipe predict` classifies): the same inputs, each failure in its place.
        stack, errors = stacked_model_inputs(read_cutouts(paths), field, mode)
        assert [type(e) for e in errors] == [type(m) if isinstance(m, CutoutError) else type(None) for m in together]
        np.testing.assert_array_equal(stack, np.stack([m for m in together if not isinstance(m, CutoutError)]))
    # Cutouts of one shape, all usable (the stack they were normalised in is returned as it is): the same numbers.
    stack, errors = stacked_model_inputs(read_cutouts(paths[:2]), 24.0, "bands")
    assert errors == [None, None] and stack.shape == (2, 3, 69, 69)
    np.testing.assert_array_equal(stack, np.stack(model_inputs(read_cutouts(paths[:2]), 24.0, "bands")))


def test_the_viewer_rendering_shows_the_faint_disk_as_an_8_bit_jpeg(tmp_path, sdss_catalog):
    """colour_rendering "sdss_viewer": a survey viewer's asinh stretch lifts a galaxy's faint
    outskirts, which the Lupton composite on a surface-brightness scale leaves dark, and the
    image went through an 8-bit JPEG."""
    from galpipe.cutouts import read_cutout
    from galpipe.preprocessing import colour_image

    galaxy = _truth(sdss_catalog.sort_values("mag_r").iloc[len(sdss_catalog) // 2].to_dict())
    size = SDSS.cutout_size_pixels(40)
    path = tmp_path / "g.fits"
    write_cutout_fits(path, render_galaxy(galaxy, SDSS, size, add_noise=False), "gri", 30, 0, SDSS.pixel_scale_arcsec,
                      {"MAGZERO": SDSS.zeropoint_mag})
    cutout = read_cutout(path)
    y, x = np.mgrid[:size, :size] - size // 2
    outskirts = (np.hypot(x, y) > 6) & (np.hypot(x, y) < 15)  # 2.4" to 6" from the centre
    lupton, viewer = (colour_image(cutout, SDSS.pixel_scale_arcsec, rendering=r) for r in ("lupton", "sdss_viewer"))
    assert viewer.shape == lupton.shape == (3, size, size) and 0 <= viewer.min() and viewer.max() <= 1
    assert viewer.sum(axis=0)[outskirts].mean() > 1.5 * lupton.sum(axis=0)[outskirts].mean()
    assert np.allclose(viewer * 255, np.round(viewer * 255))  # 8-bit
    # And a JPEG's loss, not only 8-bit rounding: the same stretch, worked out here and rounded, is
    # the same picture (within a few levels on average) but not the same pixels.
    from galpipe.preprocessing import VIEWER_BAND_SCALES, VIEWER_Q, VIEWER_SOFTENING

    scaled = cutout.pixels * np.asarray(VIEWER_BAND_SCALES)[:, None, None] * 10 ** ((22.5 - SDSS.zeropoint_mag) / 2.5) \
        + VIEWER_SOFTENING
    intensity = np.maximum(scaled, 0).mean(axis=0)
    rounded = np.round(np.clip(scaled[::-1] * np.arcsinh(VIEWER_Q * intensity) / np.sqrt(VIEWER_Q)
                               / np.maximum(intensity, 1e-6), 0, 1) * 255) / 255
    assert np.abs(viewer - rounded).mean() < 3 / 255
    assert np.abs(viewer - rounded).max() >= 3 / 255
    # Weighted by band as the viewers weight them, the Lupton composite's galaxy is less red.
    balanced = colour_image(cutout, SDSS.pixel_scale_arcsec, rendering="lupton_balanced")
    centre = np.hypot(x, y) < 6
    assert balanced[2][centre].sum() / balanced[0][centre].sum() > 1.5 * lupton[2][centre].sum() / lupton[0][centre].sum()
    # A model input made that way differs from the Lupton one, and the choice is the profile's.
    inputs = [model_input(path, 40.0, "colour", colour_rendering=r) for r in ("lupton", "sdss_viewer")]
    assert not np.allclose(*inputs)


def _normalised_one_image(pixels):
    """The per-image normalisation as galpipe wrote it before inputs were made in batches."""
    border = np.concatenate([pixels[:, :4].reshape(len(pixels), -1), pixels[:, -4:].reshape(len(pixels), -1),
                             pixels[:, :, :4].reshape(len(pixels), -1), pixels[:, :, -4:].reshape(len(pixels), -1)], axis=1)
    centred = pixels - np.median(border, axis=1)[:, None, None]
    c = pixels.shape[-1] // 2
    return (centred / (centred.sum(axis=0)[c - 4:c + 5, c - 4:c + 5].max() / len(pixels))).astype(np.float32)


def test_batched_normalisation_gives_the_numbers_of_one_image_at_a_time():
    from galpipe.preprocessing import normalise_images

    images = np.random.default_rng(0).gamma(2.0, 1.0, (7, 3, 69, 69)).astype(np.float32)
    images[3] = -1.0  # no positive signal at the centre
    normalised, usable = normalise_images(images)
    assert usable.tolist() == [True, True, True, False, True, True, True]
    for k in np.flatnonzero(usable):
        np.testing.assert_array_equal(normalised[k], _normalised_one_image(images[k]))


def test_the_border_median_is_numpys_median():
    """median_last_axis (a partition and a maximum) gives np.median's numbers, NaN included, for
    even and odd counts, so the faster sky level changes no model input."""
    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        for m in (1, 2, 7, 1104):
            values = rng.normal(size=(5, 3, m)).astype(dtype)
            values[1, 2, 0] = np.nan
            values[2, 0, :] = 4.0  # ties
            median = median_last_axis(values)
            assert median.dtype == dtype
            np.testing.assert_array_equal(median, np.median(values, axis=-1))


def test_the_part_of_an_image_the_models_see_is_one_box_for_the_crop_and_the_gallery():
    # A fixed field of 10" at 0.5"/pixel: 20 pixels, centred; larger than the image: all of it.
    assert field_box(60, 60, 10.0, 0.5) == (20, 20, 20, 20)
    assert field_box(60, 40, 100.0, 0.5) == (0, 0, 60, 40)
    # Whole images: the largest centred square, then (a CentralFraction) the centred part of it.
    assert field_box(60, 40, None) == (10, 0, 40, 40)
    assert field_box(60, 40, CentralFraction(0.5)) == (20, 10, 20, 20)
    pixels = np.arange(3 * 60 * 40, dtype=np.float32).reshape(3, 60, 40)
    cutout = Cutout(Path("galaxy.png"), pixels / pixels.max(), "RGB")
    framed = model_inputs([cutout], CentralFraction(0.5), "colour")[0]
    np.testing.assert_array_equal(framed, model_inputs([Cutout(Path("part.png"), cutout.pixels[:, 20:40, 10:30], "RGB")],
                                                       None, "colour")[0])
    # A field of no whole pixel is that cutout's error, not the batch's.
    [tiny] = model_inputs([cutout], CentralFraction(0.01), "colour")
    assert isinstance(tiny, CutoutError) and "smaller than one of its pixels" in tiny.reason
    # The gallery outlines that box, and nothing where the models see the whole image.
    figure, (outlined, whole) = plt.subplots(1, 2)
    assert _draw_model_field(outlined, cutout, "a", (CentralFraction(0.5), None))
    assert not _draw_model_field(whole, Cutout(Path("square.png"), pixels[:, :40] / pixels.max(), "RGB"), "b", (None, None))
    [box] = outlined.patches
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (9.5, 19.5, 20, 20)
    assert not whole.patches
    plt.close(figure)
