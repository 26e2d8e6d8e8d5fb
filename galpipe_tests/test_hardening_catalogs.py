"""Catalogues and label files from users: image paths that lead out of the folder are refused row
by row, ids are text, a header without rows is an error, and a label file is taken only once complete."""

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import build_asset_context
from PIL import Image

from galpipe.catalogs import CatalogError, read_table, validate_catalog
from galpipe.cutouts import validate_manifest
from galpipe.defs.assets import _warn_of_labels_not_read
from galpipe.labels import label_files, read_new_labels, scan_label_folder, settling_label_files, skipped_label_files
from galpipe.prediction import list_cutouts
from galpipe.sources.folder import folder_manifest, load_folder_catalog

OUTSIDE = ["../../../etc/passwd", "/etc/passwd", "images/../../secret/s.png"]


@pytest.fixture
def survey_folder(tmp_path):
    """A folder catalogue with two good rows (one a symlink: images kept on another disk are the
    folder owner's choice) and three whose image path leads outside the folder."""
    folder = tmp_path / "survey"
    (folder / "images").mkdir(parents=True)
    pixels = (np.arange(16 * 16 * 3) % 255).astype(np.uint8).reshape(16, 16, 3)
    Image.fromarray(pixels).save(folder / "images" / "a.png")
    (tmp_path / "secret").mkdir()
    Image.fromarray(pixels).save(tmp_path / "secret" / "s.png")
    (folder / "images" / "b_link.png").symlink_to(tmp_path / "secret" / "s.png")
    pd.DataFrame({"id": ["g1", "g2", "g3", "g4", "g5"],
                  "file": ["images/a.png", "images/b_link.png", *OUTSIDE]}).to_csv(folder / "cat.csv", index=False)
    return folder


def test_folder_catalogue_refuses_paths_outside_the_folder_row_by_row(survey_folder):
    catalog = load_folder_catalog(survey_folder, "cat.csv", "id", "file")
    assert len(catalog) == 5  # every row kept
    good, bad = catalog.iloc[:2], catalog.iloc[2:]
    assert (good.image_refused == "").all()
    assert all(path.startswith(str(survey_folder)) for path in good.image_path)
    assert (bad.image_path == "").all()
    for reason, given in zip(bad.image_refused, OUTSIDE):
        assert f"image path {given!r} leads outside the catalogue folder" in reason

    manifest = validate_manifest(folder_manifest(catalog), expected_bands=None)
    assert manifest.status.tolist() == ["ok", "ok", "failed", "failed", "failed"]  # counted as failed
    assert manifest.reason.tolist()[2:] == bad.image_refused.tolist()


def test_prediction_catalogue_refuses_paths_outside_its_folder_row_by_row(survey_folder):
    cutouts = list_cutouts(catalog=str(survey_folder / "cat.csv"), id_column="id", image_column="file")
    assert cutouts.object_id.tolist() == ["g1", "g2", "g3", "g4", "g5"]
    assert all(os.path.isfile(p) for p in cutouts.path[:2]) and (cutouts.reason[:2] == "").all()
    assert (cutouts.path[2:] == "").all()  # never opened
    for reason, given in zip(cutouts.reason[2:], OUTSIDE):
        assert f"image path {given!r} leads outside the catalogue folder" in reason


def test_ids_are_text_so_007_and_7_stay_two_galaxies(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_text("object_id,ra_deg,dec_deg\n007,10,0\n7,11,0\n")
    assert validate_catalog(read_table(path), str(path)).object_id.tolist() == ["007", "7"]

    (tmp_path / "a.png").write_bytes(b"")
    path.write_text("galaxy,file\n007,a.png\n7,a.png\n")
    assert load_folder_catalog(tmp_path, "cat.csv", "galaxy", "file").object_id.tolist() == ["007", "7"]
    assert list_cutouts(catalog=str(path), id_column="galaxy", image_column="file").object_id.tolist() == ["007", "7"]

    path.write_text("object_id,ra_deg,dec_deg\n007,10,0\n007,11,0\n")
    with pytest.raises(CatalogError, match=r"duplicate object_id \['007'\] in row\(s\) 0, 1"):
        validate_catalog(read_table(path), str(path))

    parquet = tmp_path / "cat.parquet"  # Parquet keeps its types: integer ids are still read
    pd.DataFrame({"object_id": [7, 8], "ra_deg": [10.0, 11.0], "dec_deg": [0.0, 0.0]}).to_parquet(parquet)
    assert validate_catalog(read_table(parquet), str(parquet)).object_id.tolist() == ["7", "8"]


def test_a_catalogue_with_a_header_and_no_rows_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "header_only.csv"
    path.write_text("object_id,ra_deg,dec_deg,image_path\n")
    with pytest.raises(CatalogError, match=re.escape(f"{path}: no rows")):
        validate_catalog(read_table(path), str(path))
    with pytest.raises(CatalogError, match=re.escape(f"{path}: no rows")):
        load_folder_catalog(tmp_path, path.name, "object_id", "image_path")
    with pytest.raises(CatalogError, match=re.escape(f"{path}: no rows")):
        list_cutouts(catalog=str(path))


def _age(path, seconds=60):
    modified = path.stat().st_mtime - seconds
    os.utime(path, (modified, modified))


def test_a_label_file_is_taken_only_once_complete(tmp_path):
    (tmp_path / "labels.csv").write_text("object_id,featured\ng1,1\n")
    assert label_files(tmp_path) == [] and settling_label_files(tmp_path) == [tmp_path / "labels.csv"]
    assert read_new_labels(tmp_path, ["featured"]).empty  # just written: perhaps still being copied
    assert label_files(tmp_path, settle_seconds=0) == [tmp_path / "labels.csv"]  # the settle time is a parameter

    _age(tmp_path / "labels.csv")
    assert label_files(tmp_path) == [tmp_path / "labels.csv"] and settling_label_files(tmp_path) == []
    assert read_new_labels(tmp_path, ["featured"]).object_id.tolist() == ["g1"]

    for name in (".labels.csv.part", "labels.csv.tmp", ".hidden.csv"):  # in progress: ignored however old
        (tmp_path / name).write_text("object_id,featured\ng2,1\ng3,")
        _age(tmp_path / name)
    assert label_files(tmp_path) == [tmp_path / "labels.csv"] and settling_label_files(tmp_path) == []
    assert read_new_labels(tmp_path, ["featured"]).object_id.tolist() == ["g1"]
    assert skipped_label_files(tmp_path) == {}  # in progress by the naming rule: not worth a warning

    (tmp_path / "more.csv.gz").write_bytes(b"")  # never read, so said
    (tmp_path / "old").mkdir()  # a folder is not a file meant as labels: not said
    (tmp_path / "late.csv").write_text("object_id,featured\ng4,1\n")
    assert set(skipped_label_files(tmp_path)) == {"more.csv.gz", "late.csv"}
    assert "later run" in skipped_label_files(tmp_path)["late.csv"]


def test_what_is_read_recorded_and_reported_comes_from_one_listing(tmp_path):
    """matched_catalog reads the labels, records their files for the sensor and warns of the
    skipped ones from one listing: a file that arrives or settles meanwhile is in none of the
    three (the sensor sees it as new and a later run takes it), never read but unrecorded."""
    (tmp_path / "a.csv").write_text("object_id,featured\ng1,1\n")
    (tmp_path / "b.csv").write_text("object_id,featured\ng2,0\n")  # still settling when listed
    _age(tmp_path / "a.csv")
    listed = scan_label_folder(tmp_path)
    _age(tmp_path / "b.csv")  # settles after the listing
    (tmp_path / "c.csv").write_text("object_id,featured\ng3,1\n")  # arrives after it
    _age(tmp_path / "c.csv")
    assert listed.read(["featured"]).object_id.tolist() == ["g1"]
    assert list(listed.state(["featured"])) == ["a.csv"] and list(listed.skipped()) == ["b.csv"]
    again = scan_label_folder(tmp_path)
    assert again.read(["featured"]).object_id.tolist() == ["g1", "g2", "g3"] and again.skipped() == {}
    assert again.state(["featured"])["a.csv"] == listed.state(["featured"])["a.csv"]


def test_matched_catalog_reads_each_label_file_once(tmp_path, monkeypatch):
    """The labels, the columns not read and the state the sensor compares with, from one reading."""
    import galpipe.labels

    (tmp_path / "a.csv").write_text("object_id,featured,bar,notes\ng1,1,0,x\n")
    (tmp_path / "b.csv").write_text("object_id,bar\ng2,1\n")
    for name in ("a.csv", "b.csv"):
        _age(tmp_path / name)
    listed = scan_label_folder(tmp_path)
    reads = []
    real_read_table = galpipe.labels.read_table
    monkeypatch.setattr(galpipe.labels, "read_table", lambda path: reads.append(Path(path).name) or real_read_table(path))
    labels, unread, state = listed.read_with_state(["featured", "bar"])
    assert sorted(reads) == ["a.csv", "b.csv"]
    assert state == listed.state(["featured", "bar"]) and state["b.csv"]["tasks"] == ["bar"]
    assert unread == {"a.csv": ["notes"]} and labels.object_id.tolist() == ["g1", "g2"]


def test_label_columns_that_are_not_tasks_are_named_not_dropped_silently(tmp_path):
    (tmp_path / "a.csv").write_text("object_id,featured,Bar,notes\ng1,1,1,clear arms\n")
    (tmp_path / "b.csv").write_text("object_id,featured\ng2,0\n")
    for name in ("a.csv", "b.csv"):
        _age(tmp_path / name)
    labels, unread, _ = scan_label_folder(tmp_path).read_with_state(["featured", "bar"])
    assert unread == {"a.csv": ["Bar", "notes"]}  # a misspelt task is not taken for `bar`
    assert labels.columns.tolist() == ["object_id", "featured"] and labels.featured.tolist() == [1, 0]
    (tmp_path / "c.csv.gz").write_bytes(b"")  # a file of another kind: not read at all
    with build_asset_context() as context:  # what matched_catalog warns of and counts
        counts = _warn_of_labels_not_read(context, scan_label_folder(tmp_path), unread, ["featured", "bar"])
    assert counts == {"n_label_files_skipped": 1, "n_label_columns_not_read": 2}


def test_a_renamed_column_that_would_clash_with_one_already_there_names_both():
    from galpipe.catalogs import renamed

    table = pd.DataFrame({"galaxy_id": ["a"], "object_id": ["b"], "RA": [1.0]})
    with pytest.raises(CatalogError, match=re.escape("cat.csv: renaming 'galaxy_id' -> 'object_id' would give two")):
        renamed(table, {"galaxy_id": "object_id", "RA": "ra_deg"}, "cat.csv")
    with pytest.raises(CatalogError, match="'galaxy_id' -> 'ra_deg', 'RA' -> 'ra_deg' would give two"):
        renamed(table, {"galaxy_id": "ra_deg", "RA": "ra_deg"}, "cat.csv")  # two columns onto one name
    assert list(renamed(table.drop(columns="object_id"), {"galaxy_id": "object_id"}, "cat.csv").columns) == [
        "object_id", "RA"]


def test_predict_lists_no_galaxy_without_an_id_and_refuses_a_catalogue_repeating_one(tmp_path):
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / name)
    catalogue = tmp_path / "catalogue.csv"
    pd.DataFrame({"object_id": ["g1", None], "image_path": ["a.png", "b.png"]}).to_csv(catalogue, index=False)
    listed = list_cutouts(catalog=str(catalogue))
    assert listed.reason.tolist() == ["", "no object id"] and listed.path.iloc[1] == ""  # counted as skipped
    pd.DataFrame({"object_id": ["g1", "g1"], "image_path": ["a.png", "b.png"]}).to_csv(catalogue, index=False)
    with pytest.raises(CatalogError, match=re.escape(f"{catalogue}: duplicate object_id ['g1'] in row(s) 0, 1")):
        list_cutouts(catalog=str(catalogue))
    (tmp_path / "more").mkdir()  # in a folder, two files of one name are told apart by their paths
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "more" / "a.png")
    listed = list_cutouts(folder=str(tmp_path))
    assert sorted(listed.object_id[listed.reason == ""]) == ["a", "a", "b"]
    assert listed.object_id[listed.reason != ""].tolist() == [str(catalogue)]  # the folder's other file, named
