"""Draw simulated galaxies as an instrument sees them, with GalSim: bulge + inclined thick disk,
optional bar, spiral arms or star-forming knots, each with its own colour, convolved with the
band's PSF, pixelised and given the band's sky noise.

The structure of a galaxy (knot positions, arm clumps) comes from its `structure_seed`, so both
surveys draw the same galaxy; the noise comes from (structure_seed, instrument), so each survey
has its own.
"""

from __future__ import annotations

import math

import galsim
import numpy as np

from galpipe.instruments import EFFECTIVE_WAVELENGTH_NM, Band, Instrument

GSPARAMS = galsim.GSParams(folding_threshold=1e-2, maxk_threshold=2e-3)
ARM_CLUMPS_PER_ARM = 30


def _project_onto_sky(obj: galsim.GSObject, inclination_deg: float, position_angle_deg: float):
    """An object drawn in the plane of the disk, seen at the disk's inclination and angle."""
    cos_i = max(math.cos(math.radians(inclination_deg)), 0.1)
    # shear(q) keeps area; dilate(sqrt(q)) then shrinks only the minor axis overall.
    return (obj.shear(q=cos_i, beta=0 * galsim.degrees).dilate(math.sqrt(cos_i))
            .rotate(position_angle_deg * galsim.degrees))


def _spiral_arms(g, rng: np.random.Generator) -> galsim.GSObject:
    """Logarithmic spiral arms as chains of Gaussian clumps, total flux 1."""
    scale = g["disk_scale_radius_arcsec"]
    tan_pitch = math.tan(math.radians(g["spiral_pitch_deg"]))
    n_arms = int(g["spiral_arm_count"])
    clumps = []
    for arm in range(n_arms):
        phase = 2 * math.pi * arm / n_arms
        # Radius grows as exp(theta * tan(pitch)) from 0.5 to 3.5 scale radii.
        theta_max = math.log(7.0) / tan_pitch
        for theta in np.linspace(0, theta_max, ARM_CLUMPS_PER_ARM):
            radius = 0.5 * scale * math.exp(theta * tan_pitch) * (1 + rng.normal(0, 0.05))
            angle = theta + phase + rng.normal(0, 0.05)
            clumps.append(galsim.Gaussian(sigma=0.3 * scale, flux=rng.uniform(0.5, 1.5), gsparams=GSPARAMS)
                          .shift(radius * math.cos(angle), radius * math.sin(angle)))
    arms = galsim.Add(clumps)
    return arms.withFlux(1.0)


def galaxy_components(g) -> list[tuple[galsim.GSObject, float, float, float]]:
    """(profile of unit flux, r-band flux fraction, g-r, r-i) for each component of galaxy `g`
    (a row of the sky table)."""
    rng = np.random.default_rng(int(g["structure_seed"]))
    incl, pa = g["inclination_deg"], g["position_angle_deg"]
    bulge_fraction = g["bulge_to_total"]
    components = []
    if bulge_fraction > 0:
        bulge = (galsim.Sersic(n=g["bulge_sersic_n"], half_light_radius=g["bulge_half_light_radius_arcsec"],
                               gsparams=GSPARAMS)
                 .shear(q=g["bulge_axis_ratio"], beta=pa * galsim.degrees))
        components.append((bulge, bulge_fraction, g["bulge_g_minus_r"], g["bulge_r_minus_i"]))
    disk_fraction = 1.0 - bulge_fraction
    if disk_fraction <= 0:
        return components

    bar_fraction = disk_fraction * g["bar_flux_fraction"]
    feature_fraction = disk_fraction * g["feature_flux_fraction"]
    scale = g["disk_scale_radius_arcsec"]
    disk = galsim.InclinedExponential(
        inclination=incl * galsim.degrees, scale_radius=scale,
        scale_height=g["disk_scale_height_ratio"] * scale, gsparams=GSPARAMS,
    ).rotate(pa * galsim.degrees)
    components.append((disk, disk_fraction - bar_fraction - feature_fraction,
                       g["disk_g_minus_r"], g["disk_r_minus_i"]))
    if g["has_bar"]:
        bar = galsim.Gaussian(sigma=g["bar_half_length_arcsec"] / 2, gsparams=GSPARAMS).shear(
            q=0.3, beta=g["bar_angle_deg"] * galsim.degrees)
        # A bar is an old stellar structure: bulge-like colours.
        components.append((_project_onto_sky(bar, incl, pa), bar_fraction,
                           g["bulge_g_minus_r"], g["bulge_r_minus_i"]))
    if g["has_spiral"]:
        components.append((_project_onto_sky(_spiral_arms(g, rng), incl, pa), feature_fraction,
                           g["feature_g_minus_r"], g["feature_r_minus_i"]))
    elif g["has_knots"]:
        knots = galsim.RandomKnots(npoints=int(rng.integers(10, 30)), half_light_radius=1.678 * scale,
                                   rng=galsim.BaseDeviate(int(rng.integers(1, 2**31 - 1))),
                                   gsparams=GSPARAMS)
        components.append((_project_onto_sky(knots, incl, pa), feature_fraction,
                           g["feature_g_minus_r"], g["feature_r_minus_i"]))
    return components


def _band_flux_ratio(band: Band, g_minus_r: float, r_minus_i: float) -> float:
    """Flux in `band` relative to r for a component of the given AB colours: its magnitude is
    fixed at g, r and i, and followed linearly in wavelength from the nearest two beyond them
    (u, z, Y), so an instrument may have any of those bands."""
    nodes = [(EFFECTIVE_WAVELENGTH_NM[b], m) for b, m in (("g", g_minus_r), ("r", 0.0), ("i", -r_minus_i))]
    wavelength = band.wavelength_nm
    exact = [m for w, m in nodes if w == wavelength]
    if exact:
        return 10 ** (-0.4 * exact[0])
    (w0, m0), (w1, m1) = nodes[:2] if wavelength < nodes[1][0] else nodes[1:]
    return 10 ** (-0.4 * (m0 + (m1 - m0) * (wavelength - w0) / (w1 - w0)))


def psf(instrument: Instrument, band: str) -> galsim.GSObject:
    return galsim.Moffat(beta=instrument.psf_beta, fwhm=instrument.band(band).psf_fwhm_arcsec,
                         gsparams=GSPARAMS)


def render_galaxy(g, instrument: Instrument, size_pixels: int, offset_pixels=(0.0, 0.0),
                  add_noise: bool = True) -> np.ndarray:
    """Image cube (band, y, x) of galaxy `g` in `instrument`'s flux units. `offset_pixels` moves
    the galaxy from the cutout centre (the catalogue position is not exactly the true one)."""
    components = galaxy_components(g)
    total_flux_r = instrument.flux_from_mag(g["mag_r"])
    noise_seed = int(g["structure_seed"]) * 7919 + sum(map(ord, instrument.name))
    noise_rng = galsim.BaseDeviate(noise_seed % (2**31 - 1) + 1)
    cube = np.empty((len(instrument.bands), size_pixels, size_pixels), dtype=np.float32)
    for k, band in enumerate(instrument.bands):
        galaxy = galsim.Add([
            profile * (total_flux_r * fraction * _band_flux_ratio(band, gr, ri))
            for profile, fraction, gr, ri in components
        ])
        image = galsim.Convolve(galaxy, psf(instrument, band.name)).drawImage(
            nx=size_pixels, ny=size_pixels, scale=instrument.pixel_scale_arcsec, offset=offset_pixels)
        if add_noise:
            image.addNoise(galsim.GaussianNoise(noise_rng, sigma=instrument.sky_sigma_per_pixel(band.name)))
        cube[k] = image.array
    return cube


def render_point_source(instrument: Instrument, band: str, flux: float, size_pixels: int,
                        add_noise: bool = False, seed: int = 1) -> np.ndarray:
    """A star: the band's PSF alone, for checking the instrument model."""
    image = (psf(instrument, band) * flux).drawImage(nx=size_pixels, ny=size_pixels,
                                                     scale=instrument.pixel_scale_arcsec)
    if add_noise:
        image.addNoise(galsim.GaussianNoise(galsim.BaseDeviate(seed),
                                            sigma=instrument.sky_sigma_per_pixel(band)))
    return image.array.astype(np.float64)
