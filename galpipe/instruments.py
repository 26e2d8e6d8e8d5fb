"""Instrument models of the surveys galpipe simulates: pixel scale, PSF, photometric zero point
and sky noise per band, as plain data (DESIGN.md section 3). Add a survey by adding an entry to
INSTRUMENTS; nothing else needs to change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Diameter of the aperture in which the DES DR1 depths are quoted.
DES_DEPTH_APERTURE_ARCSEC = 1.95
# Effective wavelengths of the SDSS/DES-like filters (Fukugita et al. 1996; DES DR1), which the
# simulated galaxies' colours are interpolated over.
EFFECTIVE_WAVELENGTH_NM = {"u": 355.0, "g": 477.0, "r": 623.0, "i": 763.0, "z": 913.0, "Y": 1000.0}


@dataclass(frozen=True)
class Band:
    """One filter of an instrument.

    Noise is background limited: each pixel gets Gaussian noise of `sky_sigma_per_pixel`
    (in the image's flux unit). It is derived from the stated depth in one of two ways, so the
    numbers in the model are the ones the survey papers quote:
    - `sky_mag_per_arcsec2` and `electrons_per_flux_unit` (single-epoch, sky-limited: SDSS);
    - `depth_mag` at `depth_nsigma` in an aperture of `depth_aperture_arcsec` (coadds: DES).
    """

    name: str
    psf_fwhm_arcsec: float
    sky_mag_per_arcsec2: float | None = None
    electrons_per_flux_unit: float | None = None
    depth_mag: float | None = None
    depth_nsigma: float = 10.0
    depth_aperture_arcsec: float = DES_DEPTH_APERTURE_ARCSEC

    @property
    def wavelength_nm(self) -> float:
        try:
            return EFFECTIVE_WAVELENGTH_NM[self.name]
        except KeyError:
            raise KeyError(f"band {self.name!r} has no effective wavelength; known: {sorted(EFFECTIVE_WAVELENGTH_NM)}") from None


@dataclass(frozen=True)
class Instrument:
    name: str
    pixel_scale_arcsec: float
    zeropoint_mag: float  # magnitude of one image flux unit, AB
    flux_unit: str
    bands: tuple[Band, ...]
    astrometric_scatter_arcsec: float  # per-coordinate rms of catalogue positions
    psf_beta: float = 3.5  # Moffat index: ground-based PSFs have broader wings than a Gaussian

    @property
    def band_names(self) -> str:
        return "".join(b.name for b in self.bands)

    def band(self, name: str) -> Band:
        for b in self.bands:
            if b.name == name:
                return b
        raise KeyError(f"instrument {self.name!r} has no band {name!r} (bands: {self.band_names})")

    def flux_from_mag(self, mag):
        """Total flux in image units of a source of AB magnitude `mag`."""
        return 10.0 ** (-0.4 * (mag - self.zeropoint_mag))

    def sky_sigma_per_pixel(self, band: str) -> float:
        """Standard deviation of the sky noise in one pixel, in image flux units."""
        b = self.band(band)
        pixel_area_arcsec2 = self.pixel_scale_arcsec**2
        if b.sky_mag_per_arcsec2 is not None:
            sky_flux = self.flux_from_mag(b.sky_mag_per_arcsec2) * pixel_area_arcsec2
            # Poisson noise of the sky electrons, back in flux units.
            return math.sqrt(sky_flux * b.electrons_per_flux_unit) / b.electrons_per_flux_unit
        if b.depth_mag is not None:
            aperture_pixels = math.pi * (b.depth_aperture_arcsec / 2) ** 2 / pixel_area_arcsec2
            return self.flux_from_mag(b.depth_mag) / (b.depth_nsigma * math.sqrt(aperture_pixels))
        raise ValueError(f"band {band!r} of {self.name!r} states no depth")

    def cutout_size_pixels(self, field_arcsec: float) -> int:
        """Odd number of pixels covering `field_arcsec`, so the galaxy sits on a pixel centre."""
        n = int(round(field_arcsec / self.pixel_scale_arcsec))
        return n if n % 2 == 1 else n + 1


# SDSS DR7 single epoch. Sky brightness and electrons per nanomaggy (gain / nmgy-per-count) are
# typical DR7 values; with them the r band reaches about 22.2 mag at 95% point-source
# completeness, as the survey states.
SDSS = Instrument(
    name="sdss",
    pixel_scale_arcsec=0.396,
    zeropoint_mag=22.5,
    flux_unit="nanomaggy",
    bands=(
        Band("g", psf_fwhm_arcsec=1.53, sky_mag_per_arcsec2=21.85, electrons_per_flux_unit=1000.0),
        Band("r", psf_fwhm_arcsec=1.43, sky_mag_per_arcsec2=20.86, electrons_per_flux_unit=1000.0),
        Band("i", psf_fwhm_arcsec=1.36, sky_mag_per_arcsec2=20.15, electrons_per_flux_unit=790.0),
    ),
    astrometric_scatter_arcsec=0.07,
)

# DES DR1 coadds: 10 sigma depths in 1.95" apertures (Abbott et al. 2018).
DES = Instrument(
    name="des",
    pixel_scale_arcsec=0.263,
    zeropoint_mag=30.0,
    flux_unit="count",
    bands=(
        Band("g", psf_fwhm_arcsec=1.12, depth_mag=24.33),
        Band("r", psf_fwhm_arcsec=0.96, depth_mag=24.08),
        Band("i", psf_fwhm_arcsec=0.88, depth_mag=23.44),
    ),
    astrometric_scatter_arcsec=0.05,
)

INSTRUMENTS: dict[str, Instrument] = {i.name: i for i in (SDSS, DES)}


def get_instrument(name: str) -> Instrument:
    try:
        return INSTRUMENTS[name]
    except KeyError:
        raise KeyError(f"unknown instrument {name!r}; known: {sorted(INSTRUMENTS)}") from None
