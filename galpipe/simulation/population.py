"""A simulated sky: one table of galaxies with physical (truth) parameters, the catalogues that
SDSS and DES would make of it, and Galaxy-Zoo-like volunteer labels made on SDSS images.

Everything is drawn from one seed, so the same profile always gives the same sky.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from galpipe.instruments import SDSS, Instrument
from galpipe.tasks import simulated_tasks

# The sky sits on SDSS Stripe 82, where SDSS and DES overlap.
SKY_CENTRE_RA_DEG = 30.0
SKY_CENTRE_DEC_DEG = 0.0
GALAXY_DENSITY_PER_DEG2 = 100.0  # galaxies with r < 18 (about twice the r < 17.77 density)
SKY_BRIGHT_LIMIT_R_MAG = 14.0
SKY_FAINT_LIMIT_R_MAG = 18.0
NUMBER_COUNT_SLOPE = 0.45  # d log N / dm of bright galaxies
SDSS_SPECTROSCOPIC_LIMIT_R_MAG = 17.77
VOLUNTEERS_PER_GALAXY = 40
DUST_LANE_MIN_INCLINATION_DEG = 70.0


@dataclass(frozen=True)
class SkyConfig:
    n_galaxies: int  # galaxies with r < SKY_FAINT_LIMIT_R_MAG over the source footprint
    target_footprint_fraction: float  # fraction of the source footprint the target survey covers
    close_pair_fraction: float = 0.01  # galaxies given a companion 1-4" away (tests matching)
    seed: int = 0
    # Realism (issue 14), off by default so that earlier skies stay as they were: fainter galaxies
    # and stars in every cutout's field (galpipe.simulation.render.field_objects), the same for
    # both surveys, so that the deeper one sees more of them.
    neighbours: bool = False
    # Spiral arms drawn as continuous ridges instead of chains of knots (render._continuous_spiral_arms).
    continuous_arms: bool = False
    # Spiral arms drawn as continuous ridges (whatever continuous_arms says) made unequal, lopsided and
    # clumpy (render._lopsided_and_clumpy): real arms are not symmetric under a half turn, as ridges
    # drawn alike are.
    irregular_arms: bool = False
    # A dark lane of dust along the midplane of spiral disks seen within 20 degrees of edge-on
    # (render._behind_dust_lane), with an r-band optical depth of 0.5-2 at its centre.
    dust_lanes: bool = False
    # This share of the galaxies are merging: a companion with 15-45% of the light, tidal tails with
    # 5-15% (render._merger_components). Their labels stay their own galaxy's.
    merger_fraction: float = 0.0


def sky_footprint_deg(config: SkyConfig) -> tuple[float, float, float, float]:
    """(ra_min, ra_max, dec_min, dec_max) of a square sky holding n_galaxies."""
    side_deg = np.sqrt(config.n_galaxies / GALAXY_DENSITY_PER_DEG2)
    half = side_deg / 2
    return (SKY_CENTRE_RA_DEG - half, SKY_CENTRE_RA_DEG + half,
            SKY_CENTRE_DEC_DEG - half, SKY_CENTRE_DEC_DEG + half)


def _power_law_magnitudes(rng, n, bright, faint, slope):
    """Magnitudes with N(<m) proportional to 10**(slope*m) between bright and faint."""
    lo, hi = 10 ** (slope * bright), 10 ** (slope * faint)
    return np.log10(lo + rng.random(n) * (hi - lo)) / slope


def simulate_sky(config: SkyConfig) -> pd.DataFrame:
    """Truth table of the simulated galaxies: positions, brightness, colours and structure."""
    rng = np.random.default_rng([config.seed, 1])
    n = config.n_galaxies
    ra_min, ra_max, dec_min, dec_max = sky_footprint_deg(config)
    ra = rng.uniform(ra_min, ra_max, n)
    # Uniform on the sphere within the dec band.
    sin_dec = rng.uniform(np.sin(np.radians(dec_min)), np.sin(np.radians(dec_max)), n)
    dec = np.degrees(np.arcsin(sin_dec))

    # Close companions: a copy of a random galaxy's position, moved 1-4 arcsec.
    n_pairs = int(round(config.close_pair_fraction * n))
    hosts = rng.choice(n, n_pairs, replace=False)
    companions = rng.choice(np.setdiff1d(np.arange(n), hosts), n_pairs, replace=False)
    sep_deg = rng.uniform(1.0, 4.0, n_pairs) / 3600
    angle = rng.uniform(0, 2 * np.pi, n_pairs)
    dec[companions] = dec[hosts] + sep_deg * np.sin(angle)
    ra[companions] = ra[hosts] + sep_deg * np.cos(angle) / np.cos(np.radians(dec[hosts]))

    mag_r = _power_law_magnitudes(rng, n, SKY_BRIGHT_LIMIT_R_MAG, SKY_FAINT_LIMIT_R_MAG,
                                  NUMBER_COUNT_SLOPE)
    # Brighter galaxies are bigger: 5.9" at r=14, 1.6" at r=17.7, with 0.15 dex scatter.
    half_light_radius_arcsec = np.clip(
        10 ** (0.47 - 0.15 * (mag_r - 16) + rng.normal(0, 0.15, n)), 1.0, 10.0)

    kind = rng.choice(["elliptical", "lenticular", "spiral"], n, p=[0.40, 0.15, 0.45])
    is_elliptical = kind == "elliptical"
    is_spiral = kind == "spiral"
    bulge_to_total = np.where(is_elliptical, 1.0,
                              np.where(is_spiral, rng.uniform(0.0, 0.45, n), rng.uniform(0.4, 0.75, n)))
    # Disk orientation: isotropic, so cos(inclination) is uniform.
    inclination_deg = np.degrees(np.arccos(rng.uniform(0, 1, n)))
    has_disk = ~is_elliptical
    has_bar = is_spiral & (rng.random(n) < 0.5) | (kind == "lenticular") & (rng.random(n) < 0.15)
    has_spiral = is_spiral & (rng.random(n) < 0.75)
    has_knots = is_spiral & ~has_spiral

    # Split the total half-light radius between components (bulges are more compact).
    bulge_half_light_radius_arcsec = np.where(is_elliptical, half_light_radius_arcsec,
                                              half_light_radius_arcsec * rng.uniform(0.2, 0.4, n))
    disk_scale_radius_arcsec = half_light_radius_arcsec / 1.678

    sky = pd.DataFrame({
        "object_id": [f"gal{i:06d}" for i in range(n)],
        "ra_deg": ra,
        "dec_deg": dec,
        "redshift": np.clip(0.02 + 0.13 * (mag_r - 14) / 4 + rng.normal(0, 0.02, n), 0.02, 0.15),
        "mag_r": mag_r,
        "half_light_radius_arcsec": half_light_radius_arcsec,
        "kind": kind,
        "bulge_to_total": bulge_to_total,
        "bulge_sersic_n": np.round(rng.uniform(2.5, 5.0, n), 1),  # rounded: GalSim caches per n
        "bulge_half_light_radius_arcsec": bulge_half_light_radius_arcsec,
        "bulge_axis_ratio": np.where(is_elliptical, rng.uniform(0.5, 1.0, n), rng.uniform(0.7, 1.0, n)),
        "disk_scale_radius_arcsec": disk_scale_radius_arcsec,
        "disk_scale_height_ratio": rng.uniform(0.08, 0.2, n),
        "inclination_deg": np.where(has_disk, inclination_deg, 0.0),
        "position_angle_deg": rng.uniform(0, 180, n),
        "has_bar": has_bar,
        "bar_half_length_arcsec": np.where(has_bar, half_light_radius_arcsec * rng.uniform(0.5, 1.0, n), 0.0),
        "bar_flux_fraction": np.where(has_bar, rng.uniform(0.08, 0.2, n), 0.0),
        "bar_angle_deg": rng.uniform(0, 180, n),  # in the disk plane
        "has_spiral": has_spiral,
        "spiral_arm_count": rng.choice([2, 2, 2, 3, 4], n),
        "spiral_pitch_deg": rng.uniform(12, 30, n),
        "has_knots": has_knots,
        "feature_flux_fraction": np.where(has_spiral | has_knots, rng.uniform(0.15, 0.35, n), 0.0),
        # Colours of the components (AB): old red bulges, bluer disks, blue star-forming features.
        "bulge_g_minus_r": rng.normal(0.78, 0.05, n),
        "bulge_r_minus_i": rng.normal(0.40, 0.03, n),
        "disk_g_minus_r": rng.normal(0.50, 0.08, n),
        "disk_r_minus_i": rng.normal(0.28, 0.04, n),
        "feature_g_minus_r": rng.normal(0.25, 0.08, n),
        "feature_r_minus_i": rng.normal(0.12, 0.04, n),
        "structure_seed": rng.integers(0, 2**31 - 1, n),
    })
    # Columns only when on, each drawn from a stream of its own (under the sky's tag, 1, so that no
    # training stream shares it): skies without them stay as they were.
    if config.continuous_arms:
        sky["spiral_arms_continuous"] = has_spiral
    if config.irregular_arms:
        sky["spiral_arms_irregular"] = has_spiral
    if config.dust_lanes:
        lane = is_spiral & (sky.inclination_deg > DUST_LANE_MIN_INCLINATION_DEG)
        sky["dust_lane_optical_depth_r"] = np.where(lane, np.random.default_rng([config.seed, 1, 5]).uniform(0.5, 2.0, n), 0.0)
    if config.merger_fraction > 0:
        merger_rng = np.random.default_rng([config.seed, 1, 6])
        merging = merger_rng.random(n) < config.merger_fraction
        sky["merger_companion_fraction"] = np.where(merging, merger_rng.uniform(0.15, 0.45, n), 0.0)
        sky["tidal_tail_fraction"] = np.where(merging, merger_rng.uniform(0.05, 0.15, n), 0.0)
    sky["truth_edge_on"] = has_disk & (sky.inclination_deg > 75)
    sky["truth_bar"] = has_bar & (sky.inclination_deg < 65)
    sky["truth_featured"] = has_disk & (has_spiral | has_knots | has_bar | (sky.inclination_deg > 70))
    sky["truth_spiral"] = has_spiral & (sky.inclination_deg < 70)  # arms can be seen, as Galaxy Zoo asks
    return sky


def _inside(sky: pd.DataFrame, footprint) -> np.ndarray:
    ra_min, ra_max, dec_min, dec_max = footprint
    return sky.ra_deg.between(ra_min, ra_max).to_numpy() & sky.dec_deg.between(dec_min, dec_max).to_numpy()


def target_footprint_deg(config: SkyConfig):
    """The target survey covers the western strip of the source footprint."""
    ra_min, ra_max, dec_min, dec_max = sky_footprint_deg(config)
    return ra_min, ra_min + config.target_footprint_fraction * (ra_max - ra_min), dec_min, dec_max


def observe_catalog(sky: pd.DataFrame, instrument: Instrument, footprint, r_mag_limit: float,
                    seed: int, id_prefix: str) -> pd.DataFrame:
    """The catalogue a survey makes of the sky: detections inside its footprint brighter than
    its selection limit, with measured positions and magnitudes."""
    rng = np.random.default_rng([seed, 2, sum(map(ord, instrument.name))])
    n = len(sky)
    scatter_deg = instrument.astrometric_scatter_arcsec / 3600
    dec = sky.dec_deg.to_numpy() + rng.normal(0, scatter_deg, n)
    ra = sky.ra_deg.to_numpy() + rng.normal(0, scatter_deg, n) / np.cos(np.radians(sky.dec_deg.to_numpy()))
    mag_r = sky.mag_r.to_numpy() + rng.normal(0, 0.03, n)
    size = sky.half_light_radius_arcsec.to_numpy() * np.exp(rng.normal(0, 0.05, n))
    keep = _inside(sky, footprint) & (mag_r < r_mag_limit)
    truth_columns = [c for c in sky.columns if c != "object_id"]
    catalog = pd.DataFrame({
        "object_id": [f"{id_prefix}{i:06d}" for i in range(int(keep.sum()))],
        "ra_deg": ra[keep],
        "dec_deg": dec[keep],
        "mag_r": mag_r[keep],
        "half_light_radius_arcsec": size[keep],
        # Petrosian R90 (what Galaxy Zoo framed SDSS images by): about 2.3 half-light radii for a
        # disk, 2.5 for a de Vaucouleurs bulge, whose Petrosian aperture misses some light.
        "petro_r90_arcsec": size[keep] * (2.3 + 0.2 * sky.bulge_to_total.to_numpy()[keep]),
        "sky_object_id": sky.object_id.to_numpy()[keep],
    })
    truth = sky.loc[keep, truth_columns].reset_index(drop=True).add_prefix("true_")
    truth.columns = [c.replace("true_truth_", "truth_") for c in truth.columns]
    return pd.concat([catalog, truth], axis=1)


def volunteer_votes(catalog: pd.DataFrame, seed: int, instrument: Instrument = SDSS,
                    false_positive_fraction: float = 0.0) -> pd.DataFrame:
    """Galaxy-Zoo-like vote fractions and labels for each task, as volunteers would give them
    looking at `instrument`'s images: features of galaxies small or faint at that resolution
    are often missed (a bar SDSS cannot resolve gets "no bar").

    A single volunteer's false "yes" almost never makes a majority of 40. `false_positive_fraction`
    of the galaxies without a feature are instead ones most volunteers see it in (a label that is
    wrong the other way): issue 14's label noise, off by default."""
    rng = np.random.default_rng([seed, 3])
    # A stream of its own, so that the labels without this noise stay exactly as they were.
    noise_rng = np.random.default_rng([seed, 4])
    psf_fwhm = instrument.band("r").psf_fwhm_arcsec
    size_in_psf = catalog.true_half_light_radius_arcsec.to_numpy() / psf_fwhm
    brightness = np.clip((18.3 - catalog.true_mag_r.to_numpy()) / 2.0, 0, 1)
    inclination = catalog.true_inclination_deg.to_numpy()
    bar_length_in_psf = 2 * catalog.true_bar_half_length_arcsec.to_numpy() / psf_fwhm

    visibility = {
        "featured": np.clip((size_in_psf - 0.6) / 2.0, 0, 1) ** 0.5 * brightness ** 0.5,
        "edge_on": np.clip((size_in_psf - 0.4) / 1.0, 0, 1),
        "bar": np.clip((bar_length_in_psf - 0.7) / 1.5, 0, 1) * np.clip((65 - inclination) / 30, 0, 1),
        "spiral": np.clip((size_in_psf - 0.5) / 1.5, 0, 1) ** 0.5 * brightness ** 0.3
        * np.clip((75 - inclination) / 20, 0, 1),
    }
    # Edge-on disks look featured even when small: the thin shape is enough.
    visibility["featured"] = np.where(catalog.truth_edge_on, np.maximum(visibility["featured"], 0.8),
                                      visibility["featured"])
    false_positive_rate = {"featured": 0.08, "edge_on": 0.03, "bar": 0.06, "spiral": 0.05}

    votes = pd.DataFrame(index=catalog.index)
    for task in simulated_tasks():
        truth = catalog[f"truth_{task}"].to_numpy().astype(float)
        p_yes = false_positive_rate[task] + (0.92 - false_positive_rate[task]) * truth * visibility[task]
        if false_positive_fraction > 0:
            seen_wrongly = (truth == 0) & (noise_rng.random(len(truth)) < false_positive_fraction)
            p_yes = np.where(seen_wrongly, noise_rng.uniform(0.6, 0.9, len(truth)), p_yes)
        fraction = rng.binomial(VOLUNTEERS_PER_GALAXY, p_yes) / VOLUNTEERS_PER_GALAXY
        votes[f"{task}_fraction"] = fraction
        votes[task] = (fraction > 0.5).astype("int8")
    return votes
