"""Catalogues that break the contract get an error naming the file and the rows or columns."""

import numpy as np
import pandas as pd
import pytest

from galpipe.catalogs import CatalogError, read_table, validate_catalog, write_parquet


def _catalog(**changes):
    df = pd.DataFrame({"object_id": ["a", "b", "c"], "ra_deg": [10.0, 20.0, 30.0],
                       "dec_deg": [0.0, 1.0, -1.0], "featured": [1, 0, None]})
    for column, values in changes.items():
        df[column] = values
    return df


def test_good_catalog_round_trips_through_parquet(tmp_path):
    path = tmp_path / "cat.parquet"
    write_parquet(_catalog(), path)
    checked = validate_catalog(read_table(path), str(path), label_columns=("featured",))
    assert checked.featured.tolist()[:2] == [1, 0] and pd.isna(checked.featured.iloc[2])


@pytest.mark.parametrize("bad,words", [
    (_catalog().drop(columns="dec_deg"), "missing column(s) ['dec_deg']"),
    (_catalog(object_id=["a", "b", "a"]), "duplicate object_id ['a'] in row(s) 0, 2"),
    (_catalog(ra_deg=[10.0, 360.5, 30.0]), "ra_deg out of range [0, 360) or not a number in row(s) 1"),
    (_catalog(dec_deg=[0.0, 1.0, -91.0]), "dec_deg out of range [-90, 90] or not a number in row(s) 2"),
    (_catalog(ra_deg=[10.0, 360.0, 30.0]), "ra_deg out of range [0, 360) or not a number in row(s) 1"),
    (_catalog(ra_deg=[10.0, "n/a", 30.0]), "ra_deg out of range"),
    (_catalog(featured=[1, 2, 0]), "label 'featured' must be 0 or 1 (or empty) in row(s) 1"),
])
def test_contract_violations_name_file_and_rows(tmp_path, bad, words):
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(CatalogError) as raised:
        validate_catalog(read_table(path), str(path), label_columns=("featured",))
    assert str(path) in str(raised.value) and words in str(raised.value), str(raised.value)


def test_unreadable_or_unknown_catalog_files(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(CatalogError, match="broken.parquet: cannot read catalogue"):
        read_table(broken)
    with pytest.raises(CatalogError, match="unknown catalogue format '.xlsx'"):
        (tmp_path / "cat.xlsx").write_text("x")
        read_table(tmp_path / "cat.xlsx")
    with pytest.raises(CatalogError, match="not found"):
        read_table(tmp_path / "nope.csv")


def test_galaxy_zoo_2_fractions_become_labels_down_the_decision_tree():
    from galpipe.label_catalogs import labels_from_catalog

    gz2 = pd.DataFrame({
        "t01_smooth_or_features_a02_features_or_disk_debiased": [0.9, 0.9, 0.9, 0.2, np.nan, 0.1],
        "t02_edgeon_a04_yes_debiased": [0.8, 0.1, 0.1, 0.9, np.nan, np.nan],  # row 3: edge-on votes of a smooth galaxy
        "t03_bar_a06_bar_debiased": [0.9, 0.7, 0.2, 0.9, 0.5, np.nan],
    })
    labelled, unlabelled = labels_from_catalog(gz2, "gz2")
    assert labelled.featured.tolist() == [1, 1, 1, 0, pd.NA, 0]
    assert labelled.edge_on.tolist() == [1, 0, 0, 0, pd.NA, 0]  # smooth: never edge-on, whatever the votes
    assert labelled.bar.tolist() == [0, 1, 0, 0, pd.NA, 0]  # edge-on disks are not asked about bars
    assert unlabelled == {"featured": 1, "edge_on": 1, "bar": 1}


def test_a_label_catalogue_without_its_columns_or_with_bad_values_is_named():
    from galpipe.label_catalogs import labels_from_catalog

    with pytest.raises(CatalogError, match=r"ds18.csv: label scheme 'ds18' needs column\(s\) \['P_bar_GZ2'\]"):
        labels_from_catalog(pd.DataFrame({"P_disk": [0.1], "P_edge_on": [0.2]}), "ds18", where="ds18.csv")
    with pytest.raises(CatalogError, match=r"P_disk must lie in \[0, 1\] in row\(s\) \[1, 2\]"):
        labels_from_catalog(pd.DataFrame({"P_disk": [0.1, 1.7, "high"], "P_edge_on": [0.2, 0.1, 0.0],
                                          "P_bar_GZ2": [0, 0, 0]}), "ds18")


def test_a_survey_source_reads_labels_from_a_ds18_catalogue(tmp_path):
    from galpipe.defs.surveys import LegacySurvey
    from galpipe.project import load_project

    path = tmp_path / "ds18.parquet"
    pd.DataFrame({"object_id": ["a", "b"], "ra_deg": [10.0, 11.0], "dec_deg": [0.0, 0.5],
                  "P_disk": [0.9, 0.1], "P_edge_on": [0.7, 0.0], "P_bar_GZ2": [0.2, 0.6]}).to_parquet(path)
    source = LegacySurvey(instrument="sdss", catalog_path=str(path), label_scheme="ds18")
    catalog = source.load_catalog(load_project("tiny").profile)
    assert catalog[["featured", "edge_on", "bar"]].astype(int).values.tolist() == [[1, 1, 0], [0, 0, 1]]


def test_the_catalogue_asset_counts_the_objects_a_task_has_no_label_for(tmp_path):
    from dagster import AssetKey, materialize

    from galpipe.definitions import all_assets, build_resources
    from galpipe.defs.surveys import LegacySurvey

    path = tmp_path / "ds18.parquet"
    pd.DataFrame({"object_id": ["a", "b", "c"], "ra_deg": [10.0, 11.0, 12.0], "dec_deg": [0.0, 0.5, 1.0],
                  "P_disk": [0.9, 0.1, 0.8], "P_edge_on": [0.7, 0.0, 0.1],
                  "P_bar_GZ2": [0.2, np.nan, np.nan]}).to_parquet(path)  # two never asked about a bar
    source = LegacySurvey(instrument="sdss", catalog_path=str(path), label_scheme="ds18")
    result = materialize(all_assets("tiny"), resources=build_resources("tiny", data_dir=str(tmp_path / "data"),
                                                                       source=source),
                         selection=[AssetKey("source_catalog")])
    [materialization] = result.asset_materializations_for_node("source_catalog")
    counts = {k: v.value for k, v in materialization.metadata.items() if k.startswith("n_")}
    assert counts == {"n_objects": 3, "n_unlabelled_featured": 0, "n_unlabelled_edge_on": 0, "n_unlabelled_bar": 2}
    assert materialization.metadata["tasks_without_labels"].value == ""


def test_a_simulated_survey_without_galaxies_is_a_clear_error():
    from galpipe.defs.surveys import SimulatedSurvey
    from galpipe.project import load_project

    too_bright = SimulatedSurvey(instrument="sdss", footprint="full", r_mag_limit=12.0)  # the sky starts at r = 14
    with pytest.raises(CatalogError, match="no galaxy of the sky .* brighter than r_mag_limit 12"):
        too_bright.load_catalog(load_project("tiny").profile)
