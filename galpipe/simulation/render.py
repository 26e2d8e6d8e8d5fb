"""Draw simulated galaxies as an instrument sees them, with GalSim: bulge + inclined thick disk,
optional bar, spiral arms or star-forming knots, each with its own colour, convolved with the
band's PSF, pixelised and given the band's sky noise. Where the sky table says so (issue 14's
realism effects): continuous arms, a dust lane, a merging companion with tidal tails, and the
fainter galaxies and stars of the field.

The structure of a galaxy (knot positions, arm clumps, a companion's place) comes from its
`structure_seed`, so both surveys draw the same galaxy; the noise comes from (structure_seed,
instrument), so each survey has its own.
"""

from __future__ import annotations

import math

import galsim
import numpy as np

from galpipe.instruments import EFFECTIVE_WAVELENGTH_NM, Band, Instrument

GSPARAMS = galsim.GSParams(folding_threshold=1e-2, maxk_threshold=2e-3)
# Spiral arms run from ARM_START to ARM_END scale radii, ARM_WIDTH wide (a clump's or a ridge's
# Gaussian sigma): as chains of clumps, or as continuous ridges that brighten and fade along their
# length by ARM_BRIGHTNESS_VARIATION, drawn on a square grid of 8 scale radii.
ARM_CLUMPS_PER_ARM = 30
ARM_START_SCALE_RADII, ARM_END_SCALE_RADII = 0.5, 3.5
ARM_WIDTH_SCALE_RADII = 0.3
ARM_BRIGHTNESS_VARIATION = 0.3
ARM_GRID_PIXELS = 96
# Irregular arms (issue 14: real arms are lopsided, patchy and unequal, where ridges drawn alike
# are symmetric under a half turn): each arm its own pitch (lognormal scatter) and phase (normal,
# radians), the brightness along it varying by ARM_IRREGULAR_BRIGHTNESS_VARIATION, the arms together
# brighter on one side (1 + A cos(angle - phi), A drawn from ARM_LOPSIDEDNESS), and a share of their
# light in star-forming clumps on the ridges.
ARM_PITCH_SCATTER, ARM_PHASE_SCATTER_RAD = 0.25, 0.5
ARM_IRREGULAR_BRIGHTNESS_VARIATION = 0.6
ARM_LOPSIDEDNESS = (0.2, 0.7)
ARM_CLUMP_COUNT, ARM_CLUMP_LIGHT_FRACTION, ARM_CLUMP_WIDTH_SCALE_RADII = (4, 12), 0.3, 0.12
TIDAL_TAIL_CLUMPS = 24  # overlapping Gaussians along a tidal tail: a continuous stream
# Dust lanes: the lane's width in the disk's scale heights (dust lies in a thinner layer than the
# stars); the fine grid the dimmed galaxy is drawn on (finer than both surveys' pixels, coarser
# for the biggest galaxies), with the screen averaged over 4 x 4 points in each of its pixels.
DUST_LANE_WIDTH_SCALE_HEIGHTS = 0.5
DUST_LANE_DRAWN_SCALE_RADII = 8.0
DUST_LANE_PIXEL_ARCSEC = 0.1
DUST_LANE_MAX_GRID_PIXELS = 600
DUST_LANE_SUBPIXELS = 4
# Field objects to r = 24, beyond both surveys' depths. Deep r-band counts reach ~4e4 galaxies per
# square degree at r < 24 (~11 per square arcmin), rising by ~0.35 dex per magnitude there; at the
# high galactic latitude of Stripe 82, stars to r = 24 number ~1 per square arcmin, with a
# shallower slope.
FIELD_FAINT_LIMIT_R_MAG, FIELD_BRIGHT_LIMIT_R_MAG = 24.0, 16.0
FIELD_GALAXIES_PER_ARCMIN2, FIELD_GALAXY_SLOPE = 11.0, 0.35
FIELD_STARS_PER_ARCMIN2, FIELD_STAR_SLOPE = 1.0, 0.15
CLEAR_RADIUS_ARCSEC = 3.0  # no field object this close to the cutout centre, where the target is
FIELD_DRAWN_ARCSEC = 240.0  # drawn over this square whatever the cutout, so that every survey's cutout shows the same


def _project_onto_sky(obj: galsim.GSObject, inclination_deg: float, position_angle_deg: float):
    """An object drawn in the plane of the disk, seen at the disk's inclination and angle."""
    cos_i = max(math.cos(math.radians(inclination_deg)), 0.1)
    # shear(q) keeps area; dilate(sqrt(q)) then shrinks only the minor axis overall.
    return (obj.shear(q=cos_i, beta=0 * galsim.degrees).dilate(math.sqrt(cos_i))
            .rotate(position_angle_deg * galsim.degrees))


def _spiral_arms(g, rng: np.random.Generator) -> galsim.GSObject:
    """Logarithmic spiral arms, total flux 1: continuous ridges where the sky drew them so
    (`spiral_arms_continuous`), made irregular where it says so (`spiral_arms_irregular`), else
    chains of Gaussian clumps."""
    if g.get("spiral_arms_irregular", False):
        return _continuous_spiral_arms(g, rng, np.random.default_rng([int(g["structure_seed"]), 31]))
    if g.get("spiral_arms_continuous", False):
        return _continuous_spiral_arms(g, rng)
    scale = g["disk_scale_radius_arcsec"]
    tan_pitch = math.tan(math.radians(g["spiral_pitch_deg"]))
    n_arms = int(g["spiral_arm_count"])
    clumps = []
    for arm in range(n_arms):
        phase = 2 * math.pi * arm / n_arms
        # Radius grows as exp(theta * tan(pitch)) from the arm's start to its end.
        theta_max = math.log(ARM_END_SCALE_RADII / ARM_START_SCALE_RADII) / tan_pitch
        for theta in np.linspace(0, theta_max, ARM_CLUMPS_PER_ARM):
            radius = ARM_START_SCALE_RADII * scale * math.exp(theta * tan_pitch) * (1 + rng.normal(0, 0.05))
            angle = theta + phase + rng.normal(0, 0.05)
            clumps.append(galsim.Gaussian(sigma=ARM_WIDTH_SCALE_RADII * scale, flux=rng.uniform(0.5, 1.5),
                                          gsparams=GSPARAMS)
                          .shift(radius * math.cos(angle), radius * math.sin(angle)))
    arms = galsim.Add(clumps)
    return arms.withFlux(1.0)


def _continuous_spiral_arms(g, rng: np.random.Generator, irregular: np.random.Generator | None = None) -> galsim.GSObject:
    """Logarithmic spiral arms as continuous ridges in the plane of the disk (issue 14: real arms
    are not chains of knots), total flux 1. Each ridge has a Gaussian cross-section of
    ARM_WIDTH_SCALE_RADII, runs where the clumps do, and brightens and fades along its length (a
    few random harmonics), drawn on a grid that GalSim interpolates. Half of them wind the other
    way (the clumps all wind one way; real spirals come in both). With `irregular` (a stream of its
    own, so that ridges drawn alike stay as they were) the arms are unequal, lopsided and clumpy:
    see ARM_PITCH_SCATTER and the constants after it."""
    scale = g["disk_scale_radius_arcsec"]
    n_arms = int(g["spiral_arm_count"])
    half_width = 4.0 * scale
    pixel = 2 * half_width / ARM_GRID_PIXELS
    y, x = (np.mgrid[:ARM_GRID_PIXELS, :ARM_GRID_PIXELS] + 0.5) * pixel - half_width
    radius, angle = np.hypot(x, y), np.arctan2(y, x)
    # On a logarithmic spiral, the angle grows as ln(r / r0) / tan(pitch): the logarithm once for every arm.
    log_radius = np.log(np.maximum(radius, 1e-3 * scale) / (ARM_START_SCALE_RADII * scale))
    # Arms start and end softly: over 0.3 scale radii after their start, over 0.5 before their end.
    taper = np.clip((radius - ARM_START_SCALE_RADII * scale) / (0.3 * scale), 0, 1) \
        * np.clip((ARM_END_SCALE_RADII * scale - radius) / (0.5 * scale), 0, 1)
    variation = ARM_IRREGULAR_BRIGHTNESS_VARIATION if irregular is not None else ARM_BRIGHTNESS_VARIATION
    arms, ridges = np.zeros_like(radius), []
    for arm in range(n_arms):
        pitch = math.radians(g["spiral_pitch_deg"])
        phase = 2 * math.pi * arm / n_arms + rng.normal(0, 0.1)
        if irregular is not None:
            pitch = min(pitch * math.exp(irregular.normal(0, ARM_PITCH_SCATTER)), math.radians(60))
            phase += irregular.normal(0, ARM_PHASE_SCATTER_RAD)
        winding = log_radius / math.tan(pitch)
        offset = np.angle(np.exp(1j * (angle - winding - phase)))  # to the nearest turn, in (-pi, pi]
        # Across the ridge: a step round the circle of r * offset crosses the arm at the pitch angle.
        across = radius * np.abs(offset) * math.sin(pitch)
        # Along the ridge, the angle of the nearest point on it (not of the radius: that would
        # vary the light across the arm as well).
        along = winding + offset * math.cos(pitch) ** 2
        brightness = 1 + variation * sum(
            rng.normal() * np.sin(k * along + rng.uniform(0, 2 * math.pi)) for k in (1, 2, 3))
        arms += np.exp(-0.5 * (across / (ARM_WIDTH_SCALE_RADII * scale)) ** 2) * taper * np.clip(brightness, 0.2, None)
        ridges.append((pitch, phase))
    if irregular is not None:
        arms = _lopsided_and_clumpy(arms, x, y, angle, ridges, scale, irregular)
    if rng.random() < 0.5:
        arms = arms[:, ::-1]  # the mirror image: the other handedness
    return galsim.InterpolatedImage(galsim.Image(np.ascontiguousarray(arms), scale=pixel), flux=1.0, gsparams=GSPARAMS)


def _lopsided_and_clumpy(arms: np.ndarray, x: np.ndarray, y: np.ndarray, angle: np.ndarray,
                         ridges: list[tuple[float, float]], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Ridges (on the grid x, y) brighter on one side, with ARM_CLUMP_LIGHT_FRACTION of their light
    moved into compact clumps on them: star-forming regions, placed at random along each ridge
    (pitch, phase) between the arms' start and end."""
    arms = arms * (1 + rng.uniform(*ARM_LOPSIDEDNESS) * np.cos(angle - rng.uniform(0, 2 * math.pi)))
    sigma = ARM_CLUMP_WIDTH_SCALE_RADII * scale
    clumps = np.zeros_like(arms)
    for _ in range(int(rng.integers(*ARM_CLUMP_COUNT, endpoint=True))):
        pitch, phase = ridges[rng.integers(len(ridges))]
        r = ARM_START_SCALE_RADII * scale * (ARM_END_SCALE_RADII / ARM_START_SCALE_RADII) ** rng.uniform(0.1, 0.9)
        theta = math.log(r / (ARM_START_SCALE_RADII * scale)) / math.tan(pitch) + phase
        distance2 = (x - r * math.cos(theta)) ** 2 + (y - r * math.sin(theta)) ** 2
        clumps += rng.uniform(0.5, 1.5) * np.exp(-0.5 * distance2 / sigma**2)
    return (1 - ARM_CLUMP_LIGHT_FRACTION) * arms / arms.sum() + ARM_CLUMP_LIGHT_FRACTION * clumps / clumps.sum()


def galaxy_components(g) -> list[tuple[galsim.GSObject, float, float, float]]:
    """(profile of unit flux, r-band flux fraction, g-r, r-i) for each component of galaxy `g`
    (a row of the sky table), a merging companion and its tidal tails included."""
    own, merging = system_components(g)
    return own + merging


def system_components(g) -> tuple[list, list]:
    """galaxy_components in two: the galaxy's own (which its dust lane dims), and the companion
    and tidal tails of a merger (none for most galaxies). Together they carry the catalogue's light."""
    own = _own_components(g)
    share = g.get("merger_companion_fraction", 0.0) + g.get("tidal_tail_fraction", 0.0)
    if share <= 0:
        return own, []
    return [(profile, fraction * (1 - share), gr, ri) for profile, fraction, gr, ri in own], _merger_components(g)


def _merger_components(g) -> list[tuple[galsim.GSObject, float, float, float]]:
    """A companion galaxy 0.7-2 half-light radii away, and two tidal tails: curved streams from
    1.5 out to 6 half-light radii, bending the same way, fading and widening as
    they go. Their shapes come from the galaxy's structure seed; their light from the sky table."""
    rng = np.random.default_rng([int(g["structure_seed"]), 23])
    size = g["half_light_radius_arcsec"]
    separation, angle = rng.uniform(0.7, 2.0) * size, rng.uniform(0, 2 * math.pi)
    sersic_n = float(rng.choice([1.0, 4.0]))  # a disk or a spheroid, with the colours of one
    companion = (galsim.Sersic(n=sersic_n, half_light_radius=rng.uniform(0.4, 0.9) * size, gsparams=GSPARAMS)
                 .shear(q=rng.uniform(0.4, 1.0), beta=rng.uniform(0, 180) * galsim.degrees)
                 .shift(separation * math.cos(angle), separation * math.sin(angle)))
    kind = "disk" if sersic_n == 1.0 else "bulge"
    components = [(companion, g["merger_companion_fraction"], g[f"{kind}_g_minus_r"] + rng.normal(0, 0.1),
                   g[f"{kind}_r_minus_i"] + rng.normal(0, 0.05))]
    bend = rng.uniform(0.7, 2.0) * rng.choice([-1, 1])  # radians over a tail's length
    start = rng.uniform(0, 2 * math.pi)
    along = np.linspace(0, 1, TIDAL_TAIL_CLUMPS)
    weights = 1 - 0.6 * along
    for tail_start in (start, start + math.pi):
        radius, direction = size * (1.5 + 4.5 * along), tail_start + bend * along
        clumps = [galsim.Gaussian(sigma=0.3 * size * (1 + t), flux=w, gsparams=GSPARAMS)
                  .shift(r * math.cos(d), r * math.sin(d)) for t, w, r, d in zip(along, weights, radius, direction)]
        components.append((galsim.Add(clumps).withFlux(1.0), g["tidal_tail_fraction"] / 2,
                           g["disk_g_minus_r"], g["disk_r_minus_i"]))
    return components


def _own_components(g) -> list[tuple[galsim.GSObject, float, float, float]]:
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


def _behind_dust_lane(components: list, g, bands, flux_r: float) -> list[galsim.GSObject]:
    """The galaxy's own `components` (galaxy_components' tuples) in each of `bands`, before the PSF,
    seen through the dust in its disk's midplane: a screen of optical depth
    tau_r * (623 nm / wavelength) along the major axis, Gaussian across it
    (DUST_LANE_WIDTH_SCALE_HEIGHTS of the disk's scale height) and fading along it with the disk.
    A heuristic, not radiative transfer: the same depth at any inclination past 70 degrees, the lane
    moved towards the near side (either, by the structure seed) by 0.5 scale radii x cos(inclination),
    as a disk not quite edge-on shows it. Each component is drawn once on a fine grid; each band's
    light is dimmed there and interpolated."""
    scale = g["disk_scale_radius_arcsec"]
    half_width = DUST_LANE_DRAWN_SCALE_RADII * scale
    pixel = max(DUST_LANE_PIXEL_ARCSEC, 2 * half_width / DUST_LANE_MAX_GRID_PIXELS)
    n = int(math.ceil(2 * half_width / pixel))
    # A Gaussian of a quarter of a fine pixel bounds an unconvolved component's maxk (a Sersic
    # bulge's is huge, and GalSim's FFT grid grows with it); it widens a 1" PSF's FWHM by 0.1-0.2%
    # at 0.1" pixels, 0.5% at the coarsest grid's 0.16".
    smoothing = galsim.Gaussian(sigma=pixel / 4, gsparams=GSPARAMS)
    images = [galsim.Convolve(profile, smoothing).drawImage(nx=n, ny=n, scale=pixel, method="no_pixel").array
              for profile, *_ in components]
    fine = n * DUST_LANE_SUBPIXELS
    y, x = (np.mgrid[:fine, :fine] + 0.5) * (pixel / DUST_LANE_SUBPIXELS) - n * pixel / 2
    pa = math.radians(g["position_angle_deg"])
    along, across = x * math.cos(pa) + y * math.sin(pa), -x * math.sin(pa) + y * math.cos(pa)
    near_side = np.random.default_rng([int(g["structure_seed"]), 29]).choice([-1, 1])
    shift = near_side * 0.5 * scale * math.cos(math.radians(g["inclination_deg"]))
    width = DUST_LANE_WIDTH_SCALE_HEIGHTS * g["disk_scale_height_ratio"] * scale
    tau_r = g["dust_lane_optical_depth_r"] * np.exp(-0.5 * ((across - shift) / width) ** 2 - np.abs(along) / (2 * scale))
    profiles = []
    for band in bands:
        light = sum(image * flux_r * fraction * _band_flux_ratio(band, gr, ri)
                    for image, (_, fraction, gr, ri) in zip(images, components, strict=True))
        # The screen's transmission averaged over each pixel: the lane is often narrower than a pixel.
        transmission = np.exp(-tau_r * EFFECTIVE_WAVELENGTH_NM["r"] / band.wavelength_nm).reshape(
            n, DUST_LANE_SUBPIXELS, n, DUST_LANE_SUBPIXELS).mean(axis=(1, 3))
        profiles.append(galsim.InterpolatedImage(galsim.Image(light * transmission, scale=pixel), gsparams=GSPARAMS))
    return profiles


def _in_band(components: list, band: Band, flux_r: float) -> list[galsim.GSObject]:
    """galaxy_components' profiles with their light in `band`, for a galaxy of r-band flux `flux_r`."""
    return [profile * (flux_r * fraction * _band_flux_ratio(band, gr, ri)) for profile, fraction, gr, ri in components]


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


def psf(instrument: Instrument, band: str, fwhm_scale: float = 1.0) -> galsim.GSObject:
    return galsim.Moffat(beta=instrument.psf_beta, fwhm=instrument.band(band).psf_fwhm_arcsec * fwhm_scale,
                         gsparams=GSPARAMS)


def seeing_scale(structure_seed: int, instrument: Instrument, spread: float) -> float:
    """This galaxy's PSF FWHM over the survey's median: lognormal with `spread` (0: always 1). Each
    survey draws its own, as each observed the galaxy on its own night."""
    if spread <= 0:
        return 1.0
    rng = np.random.default_rng([int(structure_seed), sum(map(ord, instrument.name)), 13])
    return float(np.exp(rng.normal(0.0, spread)))


def field_objects(structure_seed: int, field_arcsec: float) -> list[tuple[galsim.GSObject, float, float, float]]:
    """Fainter galaxies and stars within a square field of `field_arcsec` around a galaxy, as
    (profile of unit flux shifted to its place, r magnitude, g-r, r-i). Drawn from the galaxy's
    structure seed over a fixed square (FIELD_DRAWN_ARCSEC), so that the surveys' cutouts, whatever
    their size, show one sky; each survey's depth decides which of them stand out of its noise."""
    rng = np.random.default_rng([int(structure_seed), 17])
    half = FIELD_DRAWN_ARCSEC / 2
    objects = []
    for density, slope, star in ((FIELD_GALAXIES_PER_ARCMIN2, FIELD_GALAXY_SLOPE, False),
                                 (FIELD_STARS_PER_ARCMIN2, FIELD_STAR_SLOPE, True)):
        n = rng.poisson(density * (FIELD_DRAWN_ARCSEC / 60) ** 2)
        lo, hi = 10 ** (slope * FIELD_BRIGHT_LIMIT_R_MAG), 10 ** (slope * FIELD_FAINT_LIMIT_R_MAG)
        mags = np.log10(lo + rng.random(n) * (hi - lo)) / slope
        xs, ys = rng.uniform(-half, half, n), rng.uniform(-half, half, n)
        shapes = rng.random((n, 5))  # size, axis ratio, angle, two colours: drawn for all, used by those kept
        for mag, x, y, (size, q, beta, c1, c2) in zip(mags, xs, ys, shapes):
            if max(abs(x), abs(y)) > field_arcsec / 2 + 2 or np.hypot(x, y) < CLEAR_RADIUS_ARCSEC:
                continue
            if star:
                profile = galsim.DeltaFunction(gsparams=GSPARAMS)
                colours = 0.3 + 1.1 * c1, 0.1 + 0.5 * c2
            else:  # fainter galaxies are smaller: ~1.2" at r = 20, shrinking 0.1 dex per magnitude
                half_light = 1.2 * 10 ** (-0.1 * (mag - 20)) * np.exp(0.6 * (size - 0.5))
                profile = galsim.Exponential(half_light_radius=half_light, gsparams=GSPARAMS).shear(
                    q=0.3 + 0.7 * q, beta=180 * beta * galsim.degrees)
                colours = 0.2 + 1.0 * c1, 0.1 + 0.4 * c2
            objects.append((profile.shift(x, y), float(mag), *map(float, colours)))
    return objects


def render_galaxy(g, instrument: Instrument, size_pixels: int, offset_pixels=(0.0, 0.0),
                  add_noise: bool = True, neighbours: bool = False, seeing_spread: float = 0.0,
                  source_noise: bool = False) -> np.ndarray:
    """Image cube (band, y, x) of galaxy `g` in `instrument`'s flux units. `offset_pixels` moves
    the galaxy from the cutout centre (the catalogue position is not exactly the true one).
    `neighbours`: the field objects around it (field_objects); `seeing_spread`: this survey's
    seeing varies from galaxy to galaxy (seeing_scale); `source_noise`: the Poisson noise of the
    sources' own electrons on top of the sky's, in bands whose gain is known (SDSS's; a coadd's
    depth gives none)."""
    own_components, merger_components = system_components(g)
    total_flux_r = instrument.flux_from_mag(g["mag_r"])
    noise_seed = int(g["structure_seed"]) * 7919 + sum(map(ord, instrument.name))
    noise_rng = galsim.BaseDeviate(noise_seed % (2**31 - 1) + 1)
    fwhm_scale = seeing_scale(g["structure_seed"], instrument, seeing_spread)
    field = field_objects(g["structure_seed"], size_pixels * instrument.pixel_scale_arcsec) if neighbours else []
    # drawImage's offset moves everything: field objects are shifted back, to stay where they are.
    back = (-offset_pixels[0] * instrument.pixel_scale_arcsec, -offset_pixels[1] * instrument.pixel_scale_arcsec)
    cube = np.empty((len(instrument.bands), size_pixels, size_pixels), dtype=np.float32)
    # A dust lane dims the galaxy's own light, not a merging companion's or its tidal tails'.
    dimmed = _behind_dust_lane(own_components, g, instrument.bands, total_flux_r) \
        if g.get("dust_lane_optical_depth_r", 0.0) > 0 else None
    for k, band in enumerate(instrument.bands):
        own = dimmed[k] if dimmed else galsim.Add(_in_band(own_components, band, total_flux_r))
        galaxy = galsim.Add([own] + _in_band(merger_components, band, total_flux_r) + [
            profile.shift(*back) * (instrument.flux_from_mag(mag) * _band_flux_ratio(band, gr, ri))
            for profile, mag, gr, ri in field
        ])
        image = galsim.Convolve(galaxy, psf(instrument, band.name, fwhm_scale)).drawImage(
            nx=size_pixels, ny=size_pixels, scale=instrument.pixel_scale_arcsec, offset=offset_pixels)
        # Poisson noise of the sources' own electrons, in flux units squared (before the sky's is added).
        source_variance = np.maximum(image.array, 0) / band.electrons_per_flux_unit \
            if add_noise and source_noise and band.electrons_per_flux_unit else None
        if add_noise:
            image.addNoise(galsim.GaussianNoise(noise_rng, sigma=instrument.sky_sigma_per_pixel(band.name)))
        if source_variance is not None:
            # A stream of its own: without source noise the sky noise stays exactly as it was.
            source_rng = galsim.BaseDeviate((noise_seed * 31 + k) % (2**31 - 1) + 1)
            image.addNoise(galsim.VariableGaussianNoise(source_rng, galsim.Image(source_variance + 1e-30)))
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
