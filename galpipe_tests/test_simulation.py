"""The simulated sky: reproducible, the same galaxy in both surveys, labels that behave like
volunteers' on SDSS images."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from galpipe.instruments import DES, SDSS, Band
from galpipe.project import load_project
from galpipe.simulation.population import SkyConfig, simulate_sky, volunteer_votes
from galpipe.simulation.render import galaxy_components, render_galaxy
from galpipe.sources.simulated import _truth, simulated_catalog


def test_same_seed_same_sky_other_seed_other_sky():
    config = SkyConfig(n_galaxies=200, target_footprint_fraction=0.5, seed=7)
    pd.testing.assert_frame_equal(simulate_sky(config), simulate_sky(config))
    other = simulate_sky(SkyConfig(n_galaxies=200, target_footprint_fraction=0.5, seed=8))
    assert not np.allclose(other.mag_r, simulate_sky(config).mag_r)


def test_sky_is_rich_enough_for_the_tasks():
    sky = simulate_sky(SkyConfig(n_galaxies=3000, target_footprint_fraction=0.5))
    assert set(sky.kind) == {"elliptical", "lenticular", "spiral"}
    assert sky.bulge_sersic_n.between(2.5, 5.0).all()
    assert sky.half_light_radius_arcsec.between(1.0, 10.0).all()
    assert sky.half_light_radius_arcsec.quantile(0.95) > 3 * sky.half_light_radius_arcsec.quantile(0.05)
    for column in ("truth_featured", "truth_edge_on", "truth_bar", "has_spiral", "has_knots"):
        assert 0.05 < sky[column].mean() < 0.7, column


def test_target_survey_is_deeper_and_covers_part_of_the_source_footprint(tiny_profile, sdss_catalog):
    des = simulated_catalog("des", tiny_profile.sky, "target", 18.0, volunteer_labels=False)
    assert sdss_catalog.mag_r.max() < 17.77 < des.mag_r.max()
    assert des.ra_deg.max() < sdss_catalog.ra_deg.max()
    assert not {"featured", "edge_on", "bar"} & set(des.columns)


def test_rendering_is_reproducible_and_the_same_galaxy_in_both_surveys(sdss_catalog):
    galaxy = _truth(sdss_catalog.sort_values("mag_r").iloc[0].to_dict())
    sdss_a = render_galaxy(galaxy, SDSS, SDSS.cutout_size_pixels(40))
    sdss_b = render_galaxy(galaxy, SDSS, SDSS.cutout_size_pixels(40))
    np.testing.assert_array_equal(sdss_a, sdss_b)
    des = render_galaxy(galaxy, DES, DES.cutout_size_pixels(40))
    assert sdss_a.shape == (3, 101, 101) and des.shape == (3, 153, 153)
    # Total flux in AB units agrees band by band (noise averages out over the cutout).
    for k in range(3):
        sdss_flux = sdss_a[k].sum() / SDSS.flux_from_mag(0)
        des_flux = des[k].sum() / DES.flux_from_mag(0)
        assert des_flux == pytest.approx(sdss_flux, rel=0.1)


def test_des_shows_more_detail_than_sdss(sdss_catalog):
    """Sharper PSF and finer pixels: the peak surface brightness of a spiral is higher in DES."""
    spiral = sdss_catalog[sdss_catalog.true_has_spiral].sort_values("mag_r").iloc[0].to_dict()
    galaxy = _truth(spiral)
    sdss = render_galaxy(galaxy, SDSS, 101, add_noise=False)[1] / SDSS.flux_from_mag(0) / SDSS.pixel_scale_arcsec**2
    des = render_galaxy(galaxy, DES, 153, add_noise=False)[1] / DES.flux_from_mag(0) / DES.pixel_scale_arcsec**2
    assert des.max() > 1.1 * sdss.max()


def test_volunteer_labels_are_noisier_for_small_faint_galaxies():
    config = load_project("small").profile.sky
    catalog = simulated_catalog("sdss", config, "full", 17.77, volunteer_labels=True)
    agrees = catalog.featured == catalog.truth_featured.astype(int)
    big_bright = (catalog.half_light_radius_arcsec > 3) & (catalog.mag_r < 16.5)
    small_faint = (catalog.half_light_radius_arcsec < 1.6) & (catalog.mag_r > 17.0)
    assert big_bright.sum() > 30 and small_faint.sum() > 30
    assert agrees[big_bright].mean() > agrees[small_faint].mean() + 0.1
    # A bar SDSS cannot resolve is mostly labelled "no bar".
    small_bars = catalog.truth_bar & (catalog.true_bar_half_length_arcsec < 0.8)
    assert small_bars.sum() > 10
    assert catalog.bar[small_bars].mean() < 0.3


def test_votes_are_fractions_of_volunteers_and_seeded(sdss_catalog):
    votes = volunteer_votes(sdss_catalog, seed=1)
    pd.testing.assert_frame_equal(votes, volunteer_votes(sdss_catalog, seed=1))
    for task in ("featured", "edge_on", "bar"):
        assert votes[f"{task}_fraction"].between(0, 1).all()
        assert (votes[task] == (votes[f"{task}_fraction"] > 0.5)).all()


def test_an_instrument_with_other_bands_renders_them_from_the_galaxy_colours(sdss_catalog):
    """Bands come from the instrument's table: a u,g,r,i,z camera renders all five, g, r and i
    exactly as SDSS does, and u below g for galaxies redder in g-r (colours followed in wavelength)."""
    ugriz = dataclasses.replace(SDSS, name="ugriz", bands=(Band("u", 1.6, 22.0, 1000.0), *SDSS.bands,
                                                           Band("z", 1.3, 19.0, 1000.0)))
    galaxy = _truth(sdss_catalog.sort_values("mag_r").iloc[0].to_dict())
    cube = render_galaxy(galaxy, ugriz, 41, add_noise=False)
    assert cube.shape == (5, 41, 41) and np.isfinite(cube).all()
    np.testing.assert_array_equal(cube[1:4], render_galaxy(galaxy, SDSS, 41, add_noise=False))
    u, g, r, i, z = cube.sum(axis=(1, 2))
    assert 0 < u < g < r and z > 0


def _peaks(residual: np.ndarray, sigma_per_pixel: float) -> int:
    """Sources in a noise-free image that would stand 5 sigma above the survey's noise after a
    1-pixel Gaussian matched filter."""
    from scipy import ndimage

    smoothed = ndimage.gaussian_filter(residual, 1.0)
    return ndimage.label(smoothed > 5 * sigma_per_pixel / (2 * np.sqrt(np.pi)))[1]


def test_field_objects_are_one_sky_and_the_deeper_survey_sees_more_of_them(sdss_catalog):
    from galpipe.simulation.render import CLEAR_RADIUS_ARCSEC, field_objects

    seen = {"sdss": 0, "des": 0}
    n_objects = 0
    for row in sdss_catalog.sort_values("mag_r").head(6).to_dict("records"):
        galaxy = _truth(row)
        objects = field_objects(galaxy["structure_seed"], 40.0)
        again = field_objects(galaxy["structure_seed"], 40.0)
        assert [o[1:] for o in objects] == [o[1:] for o in again]  # the same sky every time
        n_objects += len(objects)
        assert all(16 <= mag <= 24 for _, mag, _, _ in objects)
        # Placed in the field, none on the target at its centre; a larger cutout shows the same ones and more.
        places = lambda objs: {(round(p.centroid.x, 6), round(p.centroid.y, 6), m) for p, m, *_ in objs}  # noqa: E731
        assert all(CLEAR_RADIUS_ARCSEC <= np.hypot(x, y) and max(abs(x), abs(y)) <= 22 for x, y, _ in places(objects))
        assert places(objects) <= places(field_objects(galaxy["structure_seed"], 60.0))
        for instrument in (SDSS, DES):
            size = instrument.cutout_size_pixels(40)
            alone = render_galaxy(galaxy, instrument, size, add_noise=False)
            np.testing.assert_array_equal(alone, render_galaxy(galaxy, instrument, size, add_noise=False,
                                                               neighbours=False, seeing_spread=0.0))
            with_field = render_galaxy(galaxy, instrument, size, add_noise=False, neighbours=True)
            residual = (with_field - alone)[1]
            seen[instrument.name] += _peaks(residual, instrument.sky_sigma_per_pixel("r"))
    # ~5 objects per 40" field to r = 24 (11 galaxies and 1 star per square arcmin)
    assert 6 * 2 < n_objects < 6 * 10
    assert seen["des"] > seen["sdss"] and seen["des"] >= 6, seen


def test_field_stars_and_galaxies_come_at_their_own_densities():
    """The neighbours are galaxies (extended) and stars (points), each at its own density to r = 24:
    over 300 fields of 60" (64" with the 2" margin each side, less the clear circle at the centre),
    each count within 5 sigma of its Poisson mean."""
    from galpipe.simulation.render import CLEAR_RADIUS_ARCSEC, FIELD_GALAXIES_PER_ARCMIN2, FIELD_STARS_PER_ARCMIN2, field_objects

    counts = {"DeltaFunction": 0, "Exponential": 0}
    for seed in range(300):
        for profile, *_ in field_objects(seed, 60.0):
            counts[type(profile.original).__name__] += 1  # a KeyError for any other kind of object
    area_arcmin2 = (64 / 60) ** 2 - np.pi * (CLEAR_RADIUS_ARCSEC / 60) ** 2
    for kind, density in (("Exponential", FIELD_GALAXIES_PER_ARCMIN2), ("DeltaFunction", FIELD_STARS_PER_ARCMIN2)):
        expected = 300 * density * area_arcmin2
        assert abs(counts[kind] - expected) < 5 * np.sqrt(expected), (kind, counts[kind], expected)


def test_seeing_varies_from_galaxy_to_galaxy_and_survey_to_survey(sdss_catalog, tmp_path):
    from galpipe.cutouts import read_cutout
    from galpipe.simulation.render import seeing_scale
    from galpipe.sources.simulated import FIELD_KEY, _render_chunk

    scales = np.array([seeing_scale(seed, SDSS, 0.15) for seed in range(400)])
    assert np.log(scales).std() == pytest.approx(0.15, rel=0.15) and seeing_scale(3, SDSS, 0.0) == 1.0
    assert seeing_scale(3, SDSS, 0.15) != seeing_scale(3, DES, 0.15)  # each survey its own night
    rows = [{**row, FIELD_KEY: 40.0} for row in sdss_catalog.head(4).to_dict("records")]
    manifest = _render_chunk(rows, "sdss", str(tmp_path / "four.stack.fits"), seeing_spread=0.15)
    fwhm = [read_cutout(entry["path"]).header["PSFFWHM1"] for entry in manifest]
    assert len(set(fwhm)) == 4 and all(0.5 * 1.43 < f < 2 * 1.43 for f in fwhm)
    # A wider PSF spreads the same galaxy: its peak falls.
    galaxy = _truth(rows[0])
    seed = next(s for s in range(50) if seeing_scale(s, SDSS, 0.3) > 1.3)
    sharp = render_galaxy({**galaxy, "structure_seed": seed}, SDSS, 101, add_noise=False)
    blurred = render_galaxy({**galaxy, "structure_seed": seed}, SDSS, 101, add_noise=False, seeing_spread=0.3)
    assert blurred[1].max() < 0.95 * sharp[1].max()
    assert blurred[1].sum() == pytest.approx(sharp[1].sum(), rel=0.02)


def test_galaxies_per_stack_depends_on_the_catalogue_alone():
    """The same catalogue gives the same stack files on any machine; a small one is cut into about
    16 (work for every core), a big one into stacks of 256."""
    from galpipe.sources.simulated import MAX_GALAXIES_PER_STACK, galaxies_per_stack

    for n in (1, 17, 160, 1200, 100_000):
        per_stack = galaxies_per_stack(n)
        assert 1 <= per_stack <= MAX_GALAXIES_PER_STACK and (n <= 16 * MAX_GALAXIES_PER_STACK) == (-(-n // per_stack) <= 16)


def test_label_noise_makes_volunteers_see_features_that_are_not_there(sdss_catalog):
    """label_false_positive_fraction: that share of the galaxies without a feature get a majority
    "yes"; at 0 the labels are exactly those without the option."""
    from galpipe.simulation.population import volunteer_votes

    catalog = sdss_catalog[[c for c in sdss_catalog.columns if not c.endswith("_fraction")
                            and c not in ("featured", "edge_on", "bar", "spiral")]]
    clean = volunteer_votes(catalog, 0, SDSS)
    pd.testing.assert_frame_equal(volunteer_votes(catalog, 0, SDSS, false_positive_fraction=0.0), clean)
    noisy = volunteer_votes(catalog, 0, SDSS, false_positive_fraction=0.2)
    for task in ("featured", "spiral"):
        without = catalog[f"truth_{task}"].to_numpy() == 0
        extra = noisy[task][without].mean() - clean[task][without].mean()
        assert 0.12 < extra < 0.28, (task, extra)


def test_source_noise_follows_the_galaxy_light(sdss_catalog):
    """source_noise: the sources' own Poisson noise, strongest where the galaxy is bright, none
    on the empty sky; without it the image is exactly as before (the sky noise's own stream)."""
    galaxy = _truth(sdss_catalog.sort_values("mag_r").iloc[len(sdss_catalog) // 2].to_dict())
    plain = render_galaxy(galaxy, SDSS, 101)
    noisy = render_galaxy(galaxy, SDSS, 101, source_noise=True)
    np.testing.assert_array_equal(render_galaxy(galaxy, SDSS, 101), plain)
    added = (noisy - plain)[1]
    light = render_galaxy(galaxy, SDSS, 101, add_noise=False)[1]
    sky_sigma = SDSS.sky_sigma_per_pixel("r")
    bright, faint = light > 50 * sky_sigma, np.abs(light) < 0.01 * sky_sigma
    assert bright.sum() >= 5 and faint.sum() > 100
    assert added[faint].std() < 0.05 * sky_sigma < added[bright].std()
    # The spread matches Poisson: variance = flux / (electrons per flux unit).
    ratio = added[bright].std() / np.sqrt(light[bright] / SDSS.band("r").electrons_per_flux_unit).mean()
    assert 0.5 < ratio < 1.5, ratio


def _arm_image(arms, galaxy, n=321):
    """(image of the arms drawn without PSF over 8 scale radii, its pixel in arcsec)."""
    pixel = 8 * galaxy["disk_scale_radius_arcsec"] / n
    return arms.drawImage(nx=n, ny=n, scale=pixel, method="no_pixel").array, pixel


def _ripple_along_arm(arms, galaxy, handedness=(1, -1)) -> float:
    """How much the light along the first arm's ridge (its outer part, 2 to 3.2 scale radii)
    rises and falls on scales shorter than the arm: knots make it ripple, a continuous arm does not.
    Along the ridge of the given handedness; of either (the lower), for arms drawn either way."""
    from scipy import ndimage

    scale = galaxy["disk_scale_radius_arcsec"]
    image, pixel = _arm_image(arms, galaxy)
    centre = (image.shape[0] - 1) / 2
    radius = np.linspace(2.0, 3.2, 300) * scale
    angle = np.log(radius / (0.5 * scale)) / np.tan(np.radians(galaxy["spiral_pitch_deg"]))
    ripples = []
    for sign in handedness:
        x, y = sign * radius * np.cos(angle) / pixel + centre, radius * np.sin(angle) / pixel + centre
        light = ndimage.map_coordinates(image, [y, x], order=1)
        ripples.append(float(np.std(light - ndimage.uniform_filter1d(light, 61, mode="nearest")) / light.mean()))
    return min(ripples)


def _arm_width(arms, galaxy) -> float:
    """The arms' Gaussian width across the ridge, in scale radii, median over 24 rays from the
    centre: a ray crosses a ridge of width w over w / cos(pitch) in radius, in either handedness."""
    from scipy import ndimage

    scale, pitch = galaxy["disk_scale_radius_arcsec"], np.radians(galaxy["spiral_pitch_deg"])
    image, pixel = _arm_image(arms, galaxy)
    centre = (image.shape[0] - 1) / 2
    radius, widths = np.linspace(1.2, 2.8, 400) * scale, []
    for ray in np.linspace(0, 2 * np.pi, 24, endpoint=False):
        light = ndimage.map_coordinates(image, [radius * np.sin(ray) / pixel + centre,
                                                radius * np.cos(ray) / pixel + centre], order=1)
        peak = int(np.argmax(light))
        if not 20 <= peak < len(radius) - 20:
            continue
        near = slice(peak - 15, peak + 16)  # +-0.06 scale radii: a parabola in log(light) gives the width
        curvature = np.polyfit(radius[near] - radius[peak], np.log(light[near]), 2)[0]
        widths.append(np.sqrt(-1 / (2 * curvature)) * np.cos(pitch) / scale)
    return float(np.median(widths))


def test_continuous_arms_are_ridges_without_knots_and_off_change_nothing():
    from galpipe.simulation.render import ARM_WIDTH_SCALE_RADII, _spiral_arms

    config = SkyConfig(n_galaxies=300, target_footprint_fraction=0.3, seed=0)
    plain, continuous = simulate_sky(config), simulate_sky(dataclasses.replace(config, continuous_arms=True))
    # Off, the sky is as it was; on, only the spirals are drawn otherwise.
    pd.testing.assert_frame_equal(plain, continuous.drop(columns="spiral_arms_continuous"))
    ripple = {True: [], False: []}
    spirals = continuous[continuous.has_spiral].head(8).to_dict("records")
    for k, galaxy in enumerate(spirals):
        for drawn in (True, False):
            arms = _spiral_arms({**galaxy, "spiral_arms_continuous": drawn}, np.random.default_rng(k))
            ripple[drawn].append(_ripple_along_arm(arms, galaxy, (1, -1) if drawn else (1,)))  # knots wind one way
    # Every ridge is smooth; knots ripple (most of them; a few overlap into near-ridges).
    assert max(ripple[True]) < 0.03 and np.median(ripple[False]) > 3 * np.median(ripple[True]), ripple
    # The ridges are as wide as the clumps were (the width across an arm, not along a circle).
    two_armed = [g for g in continuous[continuous.has_spiral].to_dict("records") if g["spiral_arm_count"] == 2][:4]
    for k, galaxy in enumerate(two_armed):
        assert _arm_width(_spiral_arms(galaxy, np.random.default_rng(k)), galaxy) == pytest.approx(
            ARM_WIDTH_SCALE_RADII, rel=0.05)
    # Rendered, the same galaxy with the same light; the arms are in its image.
    galaxy = continuous[continuous.has_spiral & (continuous.inclination_deg < 40)].iloc[0].to_dict()
    with_ridges = render_galaxy(galaxy, SDSS, 101, add_noise=False)
    with_knots = render_galaxy({**galaxy, "spiral_arms_continuous": False}, SDSS, 101, add_noise=False)
    assert with_ridges[1].sum() == pytest.approx(with_knots[1].sum(), rel=1e-3)
    assert np.abs(with_ridges - with_knots).max() > 0.01 * with_knots.max()


def test_irregular_arms_break_the_half_turn_symmetry_of_ridges_and_off_change_nothing():
    from galpipe.simulation.render import _spiral_arms

    config = SkyConfig(n_galaxies=300, target_footprint_fraction=0.3, seed=0, continuous_arms=True)
    ridges, irregular = simulate_sky(config), simulate_sky(dataclasses.replace(config, irregular_arms=True))
    pd.testing.assert_frame_equal(ridges, irregular.drop(columns="spiral_arms_irregular"))

    def asymmetry(galaxy, k):  # the share of the arms' light that a half turn does not bring onto itself
        image = _spiral_arms(galaxy, np.random.default_rng(k)).drawImage(
            nx=96, ny=96, scale=galaxy["disk_scale_radius_arcsec"] / 10, method="no_pixel").array
        return np.abs(image - image[::-1, ::-1]).sum() / (2 * image.sum())

    two_armed = [g for g in irregular[irregular.has_spiral].to_dict("records") if g["spiral_arm_count"] == 2][:8]
    drawn_alike = [asymmetry({**g, "spiral_arms_irregular": False}, k) for k, g in enumerate(two_armed)]
    unequal = [asymmetry(g, k) for k, g in enumerate(two_armed)]
    # Two ridges drawn alike are close to symmetric (their brightness varies along them); irregular
    # arms are not, in every galaxy.
    assert min(u - a for u, a in zip(unequal, drawn_alike)) > 0.1 and np.median(unequal) > 2 * np.median(drawn_alike), \
        (drawn_alike, unequal)
    # Rendered, the galaxy's image shows them.
    galaxy = irregular[irregular.has_spiral & (irregular.inclination_deg < 40)].iloc[0].to_dict()
    lopsided = render_galaxy(galaxy, SDSS, 101, add_noise=False)
    alike = render_galaxy({**galaxy, "spiral_arms_irregular": False}, SDSS, 101, add_noise=False)
    assert np.abs(lopsided - alike).max() > 0.01 * alike.max()


def test_dust_lanes_dim_the_midplane_of_edge_on_spirals_more_in_blue_light_and_off_change_nothing():
    config = SkyConfig(n_galaxies=300, target_footprint_fraction=0.3, seed=0)
    plain, dusty = simulate_sky(config), simulate_sky(dataclasses.replace(config, dust_lanes=True))
    pd.testing.assert_frame_equal(plain, dusty.drop(columns="dust_lane_optical_depth_r"))
    lane = dusty.dust_lane_optical_depth_r > 0
    assert lane.sum() >= 10 and (dusty.kind[lane] == "spiral").all() and (dusty.inclination_deg[lane] > 70).all()
    assert dusty.dust_lane_optical_depth_r[lane].between(0.5, 2.0).all()
    galaxy = dusty[lane].sort_values("half_light_radius_arcsec").iloc[-1].to_dict()
    clear = render_galaxy({**galaxy, "dust_lane_optical_depth_r": 0.0}, DES, 101, add_noise=False)
    np.testing.assert_array_equal(clear, render_galaxy({k: v for k, v in galaxy.items()
                                                        if k != "dust_lane_optical_depth_r"}, DES, 101, add_noise=False))
    seen = render_galaxy(galaxy, DES, 101, add_noise=False)
    kept = seen.sum(axis=(1, 2)) / clear.sum(axis=(1, 2))  # g, r, i
    assert 0.3 < kept[0] < kept[1] < kept[2] < 0.95, kept  # dust reddens: blue light is lost most
    # Dimmed most in the midplane, along the major axis (its position angle, counter-clockwise from
    # +x), less away from it along the minor axis.
    def kept_at(pixels, angle_deg):
        y, x = round(50 + pixels * np.sin(np.radians(angle_deg))), round(50 + pixels * np.cos(np.radians(angle_deg)))
        return seen[0][y, x] / clear[0][y, x]

    centre, major, minor = (kept_at(d, galaxy["position_angle_deg"] + turn) for d, turn in ((0, 0), (6, 0), (6, 90)))
    assert centre < minor - 0.2 and major < minor - 0.2, (centre, major, minor)
    # A merging companion and its tidal tails are not behind the lane: with the lane made almost
    # transparent, the system's light is what it is without a lane.
    merging = {**galaxy, "merger_companion_fraction": 0.3, "tidal_tail_fraction": 0.1}
    faint_lane = render_galaxy({**merging, "dust_lane_optical_depth_r": 1e-6}, DES, 101, add_noise=False)
    no_lane = render_galaxy({**merging, "dust_lane_optical_depth_r": 0.0}, DES, 101, add_noise=False)
    assert faint_lane.sum() == pytest.approx(no_lane.sum(), rel=2e-3)


def test_mergers_add_a_companion_and_tidal_tails_with_the_same_light_and_off_change_nothing():
    from scipy import ndimage

    config = SkyConfig(n_galaxies=300, target_footprint_fraction=0.3, seed=0)
    plain, merging = simulate_sky(config), simulate_sky(dataclasses.replace(config, merger_fraction=0.2))
    pd.testing.assert_frame_equal(plain, merging.drop(columns=["merger_companion_fraction", "tidal_tail_fraction"]))
    merger = merging.merger_companion_fraction > 0
    assert 0.12 < merger.mean() < 0.28 and merging.tidal_tail_fraction[merger].between(0.05, 0.15).all()
    assert (merging.tidal_tail_fraction[~merger] == 0).all()
    for galaxy in merging[merger & (merging.kind == "elliptical")].sort_values("mag_r").head(3).to_dict("records"):
        alone = {**galaxy, "merger_companion_fraction": 0.0, "tidal_tail_fraction": 0.0}
        size = SDSS.cutout_size_pixels(20 * galaxy["half_light_radius_arcsec"])
        pair, single = (render_galaxy(g, SDSS, size, add_noise=False)[1] for g in (galaxy, alone))
        # The catalogue's magnitude is the whole system's: the companion and tails take their light from it.
        assert sum(c[1] for c in galaxy_components(galaxy)) == pytest.approx(1.0)
        peaks = lambda image: int(((image == ndimage.maximum_filter(image, 5)) & (image > 0.1 * image.max())).sum())  # noqa: E731
        assert peaks(single) == 1 and peaks(pair) >= 2
        # Tidal tails carry light out beyond 3 half-light radii, more than the pair without them.
        tailless = render_galaxy({**galaxy, "tidal_tail_fraction": 0.0}, SDSS, size, add_noise=False)[1]
        y, x = np.mgrid[:size, :size] - (size - 1) / 2
        far = np.hypot(x, y) * SDSS.pixel_scale_arcsec > 3 * galaxy["half_light_radius_arcsec"]
        gained = pair[far].sum() / pair.sum() - tailless[far].sum() / tailless.sum()
        assert gained > 0.3 * galaxy["tidal_tail_fraction"]
