"""The instrument numbers of DESIGN.md section 3 reach the rendered images."""

import numpy as np
import pytest
from astropy.modeling import fitting, models

from galpipe.instruments import DES, INSTRUMENTS, SDSS, get_instrument
from galpipe.simulation.render import render_point_source

CASES = [(inst, band.name) for inst in INSTRUMENTS.values() for band in inst.bands]


def _fitted_fwhm_arcsec(image: np.ndarray, pixel_scale_arcsec: float) -> float:
    """FWHM of a Moffat fitted with astropy (independent of GalSim's own measures)."""
    y, x = np.mgrid[: image.shape[0], : image.shape[1]]
    centre = (image.shape[0] - 1) / 2
    start = models.Moffat2D(amplitude=image.max(), x_0=centre, y_0=centre, gamma=2.0, alpha=3.0)
    fitted = fitting.LevMarLSQFitter()(start, x, y, image)
    return fitted.fwhm * pixel_scale_arcsec


@pytest.mark.parametrize("instrument,band", CASES, ids=[f"{i.name}-{b}" for i, b in CASES])
def test_point_source_has_the_stated_fwhm(instrument, band):
    image = render_point_source(instrument, band, flux=1000.0, size_pixels=63)
    stated = instrument.band(band).psf_fwhm_arcsec
    assert _fitted_fwhm_arcsec(image, instrument.pixel_scale_arcsec) == pytest.approx(stated, rel=0.05)


@pytest.mark.parametrize("instrument,band", CASES, ids=[f"{i.name}-{b}" for i, b in CASES])
def test_blank_sky_noise_matches_the_model(instrument, band):
    noise = render_point_source(instrument, band, flux=0.0, size_pixels=301, add_noise=True, seed=3)
    assert noise.std() == pytest.approx(instrument.sky_sigma_per_pixel(band), rel=0.02)
    assert abs(noise.mean()) < 0.02 * noise.std()


@pytest.mark.parametrize("band", "gri")
def test_des_depth_is_ten_sigma_in_a_1_95_arcsec_aperture(band):
    """A source at the stated depth magnitude has S/N 10 in the stated aperture, with the
    aperture noise measured by summing noise pixels in many apertures."""
    spec = DES.band(band)
    noise = render_point_source(DES, band, flux=0.0, size_pixels=1001, add_noise=True, seed=5)
    radius_pixels = spec.depth_aperture_arcsec / 2 / DES.pixel_scale_arcsec
    yy, xx = np.mgrid[-5:6, -5:6]
    in_aperture = (xx**2 + yy**2) <= radius_pixels**2
    rng = np.random.default_rng(0)
    centres = rng.integers(10, 990, size=(3000, 2))
    sums = np.array([noise[y - 5:y + 6, x - 5:x + 6][in_aperture].sum() for y, x in centres])
    # Scale from the discrete pixel mask to the exact aperture area.
    sigma_aperture = sums.std() * np.sqrt(np.pi * radius_pixels**2 / in_aperture.sum())
    signal_to_noise = DES.flux_from_mag(spec.depth_mag) / sigma_aperture
    assert signal_to_noise == pytest.approx(spec.depth_nsigma, rel=0.05)


def test_sdss_r_reaches_22_2_at_95_percent_point_source_completeness():
    """With a PSF-matched 5 sigma detection, 95% completeness is (5 + 1.645) sigma of flux."""
    psf = render_point_source(SDSS, "r", flux=1.0, size_pixels=65)
    sigma_flux = SDSS.sky_sigma_per_pixel("r") / np.sqrt((psf**2).sum())
    completeness_95_mag = SDSS.zeropoint_mag - 2.5 * np.log10((5 + 1.645) * sigma_flux)
    assert completeness_95_mag == pytest.approx(22.2, abs=0.15)


def test_des_is_finer_sharper_and_deeper_than_sdss():
    assert SDSS.pixel_scale_arcsec / DES.pixel_scale_arcsec == pytest.approx(1.5, rel=0.02)
    for band in "gri":
        assert SDSS.band(band).psf_fwhm_arcsec / DES.band(band).psf_fwhm_arcsec > 1.3
        # Noise per arcsec^2 in a common unit (AB flux): DES at least 1 mag deeper.
        sdss_noise = SDSS.sky_sigma_per_pixel(band) * SDSS.pixel_scale_arcsec / SDSS.flux_from_mag(0)
        des_noise = DES.sky_sigma_per_pixel(band) * DES.pixel_scale_arcsec / DES.flux_from_mag(0)
        assert 2.5 * np.log10(sdss_noise / des_noise) > 1.0


def test_unknown_instrument_and_band_are_named():
    with pytest.raises(KeyError, match="hst"):
        get_instrument("hst")
    with pytest.raises(KeyError, match="band 'z'"):
        SDSS.band("z")
