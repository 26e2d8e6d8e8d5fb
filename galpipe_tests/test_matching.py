"""Cross-matching finds planted pairs, rejects decoys, flags ambiguity; the split is fixed."""

import numpy as np
import pandas as pd
import pytest

from galpipe.matching import AMBIGUOUS, MATCHED, UNMATCHED, assign_split, build_matched_catalog, cross_match

ARCSEC = 1 / 3600


def _offset(ra, dec, east_arcsec, north_arcsec):
    return ra + east_arcsec * ARCSEC / np.cos(np.radians(dec)), dec + north_arcsec * ARCSEC


def test_planted_pairs_found_decoys_rejected_ambiguous_flagged():
    rng = np.random.default_rng(0)
    # Sources spread out, including near RA 0/360 and at high declination.
    ra = np.concatenate([rng.uniform(10, 20, 40), [359.9999, 0.0001], [150.0]])
    dec = np.concatenate([rng.uniform(-5, 5, 40), [0.0, 0.0004], [80.0]])
    source = pd.DataFrame({"object_id": [f"s{i}" for i in range(len(ra))], "ra_deg": ra, "dec_deg": dec})

    rows = []
    for i in range(40):  # a counterpart 0.1-0.5" away
        r, d = _offset(ra[i], dec[i], *rng.uniform(-0.35, 0.35, 2))
        rows.append(("pair", i, r, d))
    for i in range(10):  # decoys 2-5" away: a neighbour, not the same galaxy
        r, d = _offset(ra[i], dec[i], rng.uniform(2, 5), 0)
        rows.append(("decoy", -1, r, d))
    r, d = _offset(150.0, 80.0, 0.3, 0.3)  # high dec: RA offsets are shrunk by cos(dec)
    rows.append(("pair", 42, r, d))
    rows.append(("wrap", 40, 0.00005, 0.0))  # across RA = 0 from source 40
    # Two target objects 0.2" and 0.3" from source 0: a shredded galaxy.
    # (the planted pair of source 0 above is the first of them)
    r, d = _offset(ra[0], dec[0], 0.0, -0.3)
    rows.append(("shred", -1, r, d))
    target = pd.DataFrame(rows, columns=["kind", "expected", "ra_deg", "dec_deg"])

    match = cross_match(target, source, radius_arcsec=1.0)
    pairs = target.kind == "pair"
    assert (match.match_status[target.kind == "decoy"] == UNMATCHED).all()
    assert match.match_status[target.kind == "wrap"].item() == MATCHED
    assert match.source_row[target.kind == "wrap"].item() == 40  # 0.54" across RA 0; source 41 is 1.45" away
    # Source 0 is claimed twice: both claims are ambiguous, no label is carried.
    claims_on_0 = (target.expected == 0) | (target.kind == "shred")
    assert (match.match_status[claims_on_0] == AMBIGUOUS).all()
    assert (match.source_row[claims_on_0] == -1).all()
    clean = pairs & ~claims_on_0
    assert (match.match_status[clean] == MATCHED).all()
    assert (match.source_row[clean] == target.expected[clean]).all()
    assert (match.match_separation_arcsec[clean] < 0.6).all()


def test_two_sources_inside_the_radius_is_ambiguous():
    source = pd.DataFrame({"object_id": ["a", "b"], "ra_deg": [10.0, 10.0], "dec_deg": [0.0, 0.8 * ARCSEC]})
    target = pd.DataFrame({"ra_deg": [10.0], "dec_deg": [0.4 * ARCSEC]})
    assert cross_match(target, source, 1.0).match_status.item() == AMBIGUOUS
    assert cross_match(target, source, 0.5).match_status.item() == AMBIGUOUS
    assert cross_match(target, source, 0.3).match_status.item() == UNMATCHED


def test_labels_are_carried_only_through_unique_matches():
    source = pd.DataFrame({"object_id": ["s0", "s1"], "ra_deg": [10.0, 20.0], "dec_deg": [0.0, 0.0],
                           "featured": np.array([1, 0], dtype="int8"), "featured_fraction": [0.9, 0.1]})
    target = pd.DataFrame({"object_id": ["t0", "t1", "t2"], "ra_deg": [10.0, 20.0, 30.0],
                           "dec_deg": [0.1 * ARCSEC, 0.0, 0.0]})
    table, counts = build_matched_catalog(target, source, ["featured"], 1.0, test_fraction=0.5)
    assert table.featured.tolist()[:2] == [1, 0] and pd.isna(table.featured.iloc[2])
    assert table.source_object_id.tolist()[:2] == ["s0", "s1"]
    assert table.split.iloc[2] == "unlabelled"
    assert counts["n_matched"] == 2 and counts["n_unmatched"] == 1
    assert counts["match_rate"] == pytest.approx(2 / 3)


def test_target_with_its_own_labels_needs_no_source():
    target = pd.DataFrame({"object_id": ["a", "b"], "ring": pd.array([1, 0], dtype="Int8")})
    table, counts = build_matched_catalog(target, None, ["ring"], 1.0, test_fraction=0.5)
    assert (table.label_origin == "target").all() and counts["n_labelled"] == 2


def test_a_target_labelling_some_tasks_keeps_its_own_labels_and_gets_the_others_carried():
    source = pd.DataFrame({"object_id": ["s0", "s1"], "ra_deg": [10.0, 20.0], "dec_deg": [0.0, 0.0],
                           "featured": pd.array([0, 0], "Int8"), "bar": pd.array([1, 0], "Int8")})
    target = pd.DataFrame({"object_id": ["t0", "t1", "t2"], "ra_deg": [10.0, 20.0, 30.0], "dec_deg": [0.0, 0.0, 0.0],
                           "featured": pd.array([1, pd.NA, 1], "Int8")})  # its own, where it has them
    table, _ = build_matched_catalog(target, source, ["featured", "bar"], 1.0, test_fraction=0.5)
    by_id = table.set_index("object_id")
    assert by_id.featured.tolist() == [1, 0, 1]  # t1's gap filled from its match; the others its own
    assert by_id.bar.tolist() == [1, 0, pd.NA]
    assert by_id.label_origin.to_dict() == {"t0": "target", "t1": "source_match", "t2": "target"}
    # Every task a column of its own, some cells empty: the gaps are still filled by the cross-match.
    target["bar"] = pd.array([pd.NA, pd.NA, pd.NA], "Int8")
    table, _ = build_matched_catalog(target, source, ["featured", "bar"], 1.0, test_fraction=0.5)
    assert table.set_index("object_id").bar.tolist() == [1, 0, pd.NA]


def test_split_is_fixed_per_object_and_has_the_requested_fraction():
    ids = pd.Series([f"des_{i:06d}" for i in range(4000)])
    split = assign_split(ids, 0.4)
    assert (split == "test").mean() == pytest.approx(0.4, abs=0.03)
    # More galaxies later never move an existing one between pool and test.
    grown = assign_split(pd.concat([ids, pd.Series([f"new_{i}" for i in range(500)])], ignore_index=True), 0.4)
    assert (grown.iloc[:4000].to_numpy() == split.to_numpy()).all()


def test_new_target_labels_override_carried_ones_and_unknown_ids_are_counted(tmp_path):
    from galpipe.labels import read_new_labels

    target = pd.DataFrame({"object_id": ["d1", "d2", "d3"], "ra_deg": [10.0, 10.1, 10.2], "dec_deg": [0.0, 0.0, 0.0]})
    source = pd.DataFrame({"object_id": ["s1"], "ra_deg": [10.0], "dec_deg": [0.0], "featured": pd.array([0], "Int8")})
    labels = tmp_path / "labels"
    labels.mkdir()
    pd.DataFrame({"object_id": ["d1", "d3", "nowhere"], "featured": [1, 0, 1]}).to_csv(labels / "a.csv", index=False)
    table, counts = build_matched_catalog(target, source, ["featured"], 1.0, 0.4,
                                          read_new_labels(labels, ["featured"], settle_seconds=0))
    by_id = table.set_index("object_id")
    assert by_id.featured.tolist() == [1, pd.NA, 0]  # d1's carried 0 overridden by the new 1
    assert by_id.label_origin.to_dict() == {"d1": "target_labels", "d2": "none", "d3": "target_labels"}
    assert by_id.split["d2"] == "unlabelled" and by_id.split["d3"] in ("pool", "test")
    assert counts["n_new_labels"] == 2 and counts["n_new_labels_unknown_id"] == 1


def test_a_label_file_with_a_bad_value_names_file_and_row(tmp_path):
    from galpipe.catalogs import CatalogError
    from galpipe.labels import read_new_labels

    pd.DataFrame({"object_id": ["d1", "d2"], "bar": [1, 7]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(CatalogError, match=r"bad.csv: label 'bar' must be 0 or 1 .* row\(s\) 1"):
        read_new_labels(tmp_path, ["bar"], settle_seconds=0)


def test_later_label_files_win_empty_cells_change_nothing_and_flags_are_per_task(tmp_path):
    from galpipe.catalogs import CatalogError
    from galpipe.labels import apply_new_labels, read_new_labels

    pd.DataFrame({"object_id": ["d1", "d2"], "featured": [1, 1], "bar": [0, None]}).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({"object_id": ["d1", "d2"], "featured": [0, None]}).to_csv(tmp_path / "b.csv", index=False)
    labels = read_new_labels(tmp_path, ["featured", "bar"], settle_seconds=0)
    by_id = labels.set_index("object_id")
    assert by_id.featured.tolist() == [0, 1]  # d1: b.csv wins; d2: b.csv's empty cell keeps a.csv's 1
    table = pd.DataFrame({"object_id": ["d1", "d2", "d3"], "featured": pd.array([1, 0, 0], "Int8"),
                          "bar": pd.array([1, 1, 1], "Int8"), "label_origin": "source_match"})
    table, counts = apply_new_labels(table, labels)
    assert table.bar.tolist() == [0, 1, 1] and table.bar_label_is_new.tolist() == [True, False, False]
    assert table.featured_label_is_new.tolist() == [True, True, False]
    assert table.label_origin.tolist() == ["target_labels", "target_labels", "source_match"]
    assert counts["n_new_labels"] == 2

    pd.DataFrame({"object_id": ["d3"], "bar": ["yes"]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(CatalogError, match=r"c.csv: label 'bar' must be 0 or 1 \(or empty\) in row\(s\) 0"):
        read_new_labels(tmp_path, ["featured", "bar"], settle_seconds=0)
