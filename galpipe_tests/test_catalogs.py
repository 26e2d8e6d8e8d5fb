"""Catalogues that break the contract get an error naming the file and the rows or columns."""

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
