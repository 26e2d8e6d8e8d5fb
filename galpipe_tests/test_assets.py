"""The Dagster assets and checks, materialized for real (a temporary Dagster instance) on the
tiny simulated surveys, the real DECaLS folder, and a folder with bad files."""

import hashlib

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, AssetSelection, DagsterInstance, Definitions, materialize
from PIL import Image

from galpipe.catalogs import write_parquet
from galpipe.cutouts import read_cutout, split_address, write_cutout_fits
from galpipe.definitions import build_resources
from galpipe.defs.assets import ASSETS
from galpipe.defs.checks import CHECKS
from galpipe.defs.surveys import FolderSurvey
from galpipe_tests.conftest import write_project

DECALS_SOURCE = dict(catalog_file="catalog.csv", id_column="iauname", ra_column="ra",
                     dec_column="dec", image_column="image", label_columns={"ring": "ring"})


def _run_all(instance, resources):
    defs = Definitions(assets=ASSETS, asset_checks=CHECKS, resources=resources)
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)


def _metadata(result, *key):
    [event] = [e for e in result.get_asset_materialization_events()
               if e.asset_key == AssetKey("_".join(key))]
    # A table's rows as text, so that a test can look for what they say.
    return {k: str([r.data for r in v.records]) if hasattr(v, "records") else v.value
            for k, v in event.materialization.metadata.items()}


def _digest(addresses):
    files = {split_address(a)[0] for a in addresses}
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The whole graph on the tiny profile, twice (the second run proves idempotence)."""
    root = tmp_path_factory.mktemp("tiny")
    resources = build_resources("tiny", data_dir=str(root / "data"), n_workers=2)
    (root / "dagster_home").mkdir()
    with DagsterInstance.local_temp(str(root / "dagster_home")) as instance:
        first = _run_all(instance, resources)
        first_manifests = {role: pd.read_parquet(root / "data" / "tiny" / role / "raw_cutouts.parquet")
                           for role in ("source", "target")}
        first_digests = {role: _digest(m.path) for role, m in first_manifests.items()}
        second = _run_all(instance, resources)
    return root / "data" / "tiny", first, second, first_manifests, first_digests


def test_whole_graph_materializes_with_all_checks_passing(tiny_run):
    run_dir, first, _, manifests, _ = tiny_run
    assert first.success
    evaluations = {(e.asset_key.to_user_string(), e.check_name): e.passed
                   for e in first.get_asset_check_evaluations()}
    assert evaluations == {("source_raw_cutouts", "cutouts_are_valid"): True,
                           ("target_raw_cutouts", "cutouts_are_valid"): True,
                           ("matched_catalog", "match_rate_above_threshold"): True,
                           ("matched_catalog", "class_balance_per_split"): True}
    source = pd.read_parquet(run_dir / "source" / "catalog.parquet")
    assert len(manifests["source"]) == len(source) and (manifests["source"].status == "ok").all()
    # Stacks, many galaxies to a file; each galaxy's address leads to its own cutout.
    stacks = sorted((run_dir / "source" / "cutouts").iterdir())
    assert all(p.name.endswith(".stack.fits") for p in stacks) and 1 < len(stacks) < len(source) / 4
    addresses = manifests["source"].set_index("object_id").path
    for object_id in source.object_id.sample(5, random_state=0):
        cutout = read_cutout(addresses[object_id])
        assert cutout.header["OBJID"] == object_id and cutout.header["SURVEY"] == "sdss"
        ra_deg, dec_deg = cutout.wcs.wcs_pix2world([[(n + 1) / 2 for n in cutout.pixels.shape[:0:-1]]], 1)[0]
        assert (ra_deg, dec_deg) == pytest.approx(tuple(source.set_index("object_id").loc[object_id, ["ra_deg", "dec_deg"]]))
    cutout_meta = _metadata(first, "target", "raw_cutouts")
    assert cutout_meta["n_ok"] == len(manifests["target"]) and cutout_meta["n_quarantined"] == 0
    assert cutout_meta["cutouts_per_s_per_core"] > 0
    assert (run_dir / "gallery.png").stat().st_size > 10_000


def test_matched_catalog_carries_labels_and_splits(tiny_run):
    run_dir, first, *_ = tiny_run
    matched = pd.read_parquet(run_dir / "matched_catalog.parquet")
    meta = _metadata(first, "matched_catalog")
    assert meta["n_matched"] + meta["n_unmatched"] + meta["n_ambiguous"] == meta["n_target"] == len(matched)
    assert meta["n_unmatched"] > 0  # DES is deeper: it has galaxies SDSS did not catalogue
    labelled = matched[matched.split.isin(["pool", "test"])]
    assert (labelled.match_status == "matched").all() and labelled.featured.notna().all()
    assert (matched[matched.match_status != "matched"].split == "unlabelled").all()
    # Labels came from the right galaxy: the matched SDSS object is the same simulated galaxy.
    source = pd.read_parquet(run_dir / "source" / "catalog.parquet").set_index("object_id")
    assert (source.loc[labelled.source_object_id, "sky_object_id"].to_numpy()
            == labelled.sky_object_id.to_numpy()).all()


def test_rematerializing_is_idempotent(tiny_run):
    run_dir, _, second, first_manifests, first_digests = tiny_run
    assert second.success
    for role in ("source", "target"):
        again = pd.read_parquet(run_dir / role / "raw_cutouts.parquet")
        pd.testing.assert_frame_equal(again, first_manifests[role])
        assert _digest(again.path) == first_digests[role]
        assert not list((run_dir / role / "cutouts").glob(".*.part"))


def test_real_decals_folder_as_target_with_its_own_labels(tmp_path, decals_folder):
    resources = build_resources("tiny", data_dir=str(tmp_path), tasks=["ring"],
                                target=FolderSurvey(folder=str(decals_folder), **DECALS_SOURCE))
    result = materialize(ASSETS[:-1], resources=resources, selection=[
        AssetKey("source_catalog"), AssetKey("target_catalog"),
        AssetKey("target_raw_cutouts"), AssetKey("matched_catalog")])
    assert result.success
    manifest = result.output_for_node("target_raw_cutouts")
    assert len(manifest) == 470 and (manifest.status == "ok").all()
    assert set(manifest.bands) == {"RGB"} and set(manifest.height_px) == {424}
    matched = result.output_for_node("matched_catalog")
    assert (matched.label_origin == "target").all() and set(matched.split) == {"pool", "test"}
    for split in ("pool", "test"):
        assert matched[matched.split == split].ring.mean() == pytest.approx(0.5, abs=0.1)
    assert _metadata(result, "matched_catalog")["n_test"] == pytest.approx(0.4 * 470, abs=25)


@pytest.mark.parametrize("pixel_scale_arcsec, passes", [(0.0, False), (0.262, True)])
def test_model_input_check_fails_on_a_folder_whose_images_cannot_become_inputs(tmp_path, decals_folder,
                                                                                 pixel_scale_arcsec, passes):
    """The real DECaLS PNGs carry no pixel scale: without the folder's, none becomes a model input
    (a run used to report success with warnings only); with it, all do."""
    from galpipe.definitions import all_assets
    from galpipe.defs.checks import MODEL_CHECKS

    project = write_project(tmp_path, "tiny", input_mode="colour", tasks=["featured"])
    folder = FolderSurvey(folder=str(decals_folder), pixel_scale_arcsec=pixel_scale_arcsec, **DECALS_SOURCE)
    resources = build_resources(project, data_dir=str(tmp_path), tasks=["ring"], target=folder)
    keys = [AssetKey("target_catalog"), AssetKey("target_raw_cutouts"), AssetKey("target_model_inputs")]
    result = materialize([*all_assets(project), *MODEL_CHECKS], resources=resources, raise_on_error=False,
                         selection=AssetSelection.assets(*keys) | AssetSelection.checks_for_assets(keys[-1]))
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "model_inputs_are_complete" and check.passed is passes
    assert check.metadata["n_cutouts"].value == 470
    assert check.metadata["n_failed"].value == (0 if passes else 470)
    if not passes:
        [reason] = check.metadata["failed_by_reason"].records
        assert "pixel scale unknown" in reason.data["reason"] and reason.data["n"] == 470


def _user_folder(tmp_path):
    folder = tmp_path / "my_survey"
    (folder / "img").mkdir(parents=True)
    rows = []
    for i in range(4):
        write_cutout_fits(folder / "img" / f"g{i}.fits", np.ones((3, 25, 25), np.float32), "gri", 30 + i, 0, 0.263)
        rows.append((f"g{i}", 30.0 + i, 0.0, f"img/g{i}.fits", i % 2))
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(folder / "img" / "p.png")
    (folder / "img" / "p.png").write_bytes((folder / "img" / "p.png").read_bytes()[:50])
    nan = np.ones((3, 25, 25), np.float32)
    nan[0, 0, 0] = np.nan
    write_cutout_fits(folder / "img" / "nan.fits", nan, "gri", 40, 0, 0.263)
    rows += [("png", 35.0, 0.0, "img/p.png", 1), ("nan", 40.0, 0.0, "img/nan.fits", 0),
             ("gone", 41.0, 0.0, "img/gone.fits", 1)]
    write_parquet(pd.DataFrame(rows, columns=["id", "ra", "dec", "file", "spiral"]), folder / "cat.parquet")
    return folder


def test_bring_your_own_folder_counts_bad_cutouts_and_keeps_the_good(tmp_path):
    folder = _user_folder(tmp_path)
    target = FolderSurvey(folder=str(folder), catalog_file="cat.parquet", id_column="id",
                          ra_column="ra", dec_column="dec", image_column="file", label_columns={"spiral": "spiral"})
    resources = build_resources("tiny", data_dir=str(tmp_path / "data"), tasks=["spiral"], target=target)
    result = materialize(ASSETS[:-1], resources=resources, selection=[
        AssetKey("source_catalog"), AssetKey("target_catalog"),
        AssetKey("target_raw_cutouts"), AssetKey("matched_catalog")])
    meta = _metadata(result, "target", "raw_cutouts")
    assert (meta["n_ok"], meta["n_quarantined"]) == (4, 3)
    assert "non-finite" in meta["problems"] and "file not found" in meta["problems"]
    assert (folder / "img" / "p.png").is_file()  # the user's files stay where they are
    matched = result.output_for_node("matched_catalog")
    assert set(matched[matched.object_id.isin(["png", "nan", "gone"])].split) == {"no_cutout"}
    assert _metadata(result, "matched_catalog")["n_no_cutout"] == 3


def test_catalog_with_duplicate_ids_fails_naming_file_and_rows(tmp_path):
    folder = _user_folder(tmp_path)
    table = pd.read_parquet(folder / "cat.parquet")
    write_parquet(pd.concat([table, table.iloc[[0]]]), folder / "cat.parquet")
    target = FolderSurvey(folder=str(folder), catalog_file="cat.parquet", id_column="id",
                          ra_column="ra", dec_column="dec", image_column="file")
    resources = build_resources("tiny", data_dir=str(tmp_path / "data"), target=target)
    result = materialize(ASSETS[:-1], resources=resources, selection=[AssetKey("target_catalog")],
                         raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.cause.message if failure.step_failure_data.error.cause \
        else failure.step_failure_data.error.message
    assert "cat.parquet" in message and "duplicate object_id ['g0'] in row(s) 0, 7" in message


def test_cutout_check_fails_when_a_cutout_is_damaged_after_materialization(tmp_path):
    resources = build_resources("tiny", data_dir=str(tmp_path), n_workers=1)
    everything = [*ASSETS, *CHECKS]
    built = materialize(everything, resources=resources,
                        selection=[AssetKey("source_catalog"), AssetKey("source_raw_cutouts")])
    manifest = built.output_for_node("source_raw_cutouts")
    damaged = split_address(manifest.path.iloc[3])[0]  # a stack: every galaxy in it is damaged
    damaged.write_bytes(damaged.read_bytes()[:3000])
    n_in_damaged = sum(split_address(a)[0] == damaged for a in manifest.path)
    checked = materialize(everything, resources=resources, raise_on_error=False,
                          selection=AssetSelection.checks_for_assets(AssetKey("source_raw_cutouts")))
    [evaluation] = checked.get_asset_check_evaluations()
    assert evaluation.check_name == "cutouts_are_valid" and not evaluation.passed
    assert evaluation.metadata["n_invalid"].value == n_in_damaged > 1
    assert damaged.name in evaluation.metadata["first_invalid"].value
