"""Cross-matching a target survey's catalogue to the source survey's, carrying the source labels
over, and the fixed split of the labelled target sample into a label pool and a test set.
"""

from __future__ import annotations

import hashlib

import astropy.units as u
import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord

from galpipe.labels import apply_new_labels

MATCHED, UNMATCHED, AMBIGUOUS = "matched", "unmatched", "ambiguous"


def cross_match(target: pd.DataFrame, source: pd.DataFrame, radius_arcsec: float = 1.0) -> pd.DataFrame:
    """For each target object, its source counterpart within `radius_arcsec`.

    Returns one row per target object (same order) with `source_row` (-1 if none),
    `match_separation_arcsec` (to the nearest source) and `match_status`:
    - matched: exactly one source within the radius, and no other target claims that source;
    - ambiguous: two or more sources within the radius, or the source is the nearest match of
      two or more targets (a blend or a shredded galaxy: no label can be trusted);
    - unmatched: no source within the radius (e.g. fainter than the source survey's limit).
    """
    n_target = len(target)
    result = pd.DataFrame({"source_row": np.full(n_target, -1),
                           "match_separation_arcsec": np.full(n_target, np.nan),
                           "match_status": np.full(n_target, UNMATCHED, dtype=object)},
                          index=target.index)
    if n_target == 0 or len(source) == 0:
        return result
    target_coords = SkyCoord(target.ra_deg.to_numpy() * u.deg, target.dec_deg.to_numpy() * u.deg)
    source_coords = SkyCoord(source.ra_deg.to_numpy() * u.deg, source.dec_deg.to_numpy() * u.deg)
    nearest, separation, _ = target_coords.match_to_catalog_sky(source_coords)
    separation_arcsec = separation.to_value(u.arcsec)
    within = separation_arcsec <= radius_arcsec

    ambiguous = np.zeros(n_target, dtype=bool)
    if len(source) >= 2:
        _, second_separation, _ = target_coords.match_to_catalog_sky(source_coords, nthneighbor=2)
        ambiguous |= within & (second_separation.to_value(u.arcsec) <= radius_arcsec)
    claimed = pd.Series(nearest[within]).value_counts()
    multiply_claimed = claimed.index[claimed > 1].to_numpy()
    ambiguous |= within & np.isin(nearest, multiply_claimed)

    result["match_separation_arcsec"] = separation_arcsec
    result.loc[within, "source_row"] = nearest[within]
    result.loc[within, "match_status"] = MATCHED
    result.loc[ambiguous, "match_status"] = AMBIGUOUS
    result.loc[ambiguous, "source_row"] = -1
    return result


def assign_split(object_ids: pd.Series, test_fraction: float, salt: str = "galpipe-test-split") -> pd.Series:
    """'test' or 'pool' for each id, from a hash of the id: fixed for an object whatever else is
    in the catalogue, so adding galaxies never moves one from the pool into the test set."""
    def unit_interval(object_id: str) -> float:
        digest = hashlib.sha256(f"{salt}:{object_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    draws = object_ids.astype(str).map(unit_interval)
    return pd.Series(np.where(draws < test_fraction, "test", "pool"), index=object_ids.index)


def build_matched_catalog(target: pd.DataFrame, source: pd.DataFrame | None, tasks, radius_arcsec: float,
                          test_fraction: float, new_labels: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """The target sample with labels: its own where it has them, else carried from the matched
    source object (when the target has positions), and `new_labels` (see galpipe.labels) over both.
    Adds `match_status`, `split` ('pool', 'test', or 'unlabelled' for objects without a label) and
    `label_origin`, per row: 'target' where the row has any label of its own, 'source_match' where
    its labels were all carried, 'target_labels' where a new label came, 'none' without any.
    Returns the table and counts for reporting."""
    tasks = list(tasks)
    own_tasks = [t for t in tasks if t in target.columns]  # a target may label some tasks, or some rows, itself
    complete = len(own_tasks) == len(tasks) and bool(target[tasks].notna().all().all())
    can_match = source is not None and {"ra_deg", "dec_deg"} <= set(target.columns)
    own_labels = complete or (bool(own_tasks) and not can_match)
    table = target.copy()
    has_own = target[own_tasks].notna().any(axis=1).to_numpy() if own_tasks else np.zeros(len(table), bool)
    if own_labels:
        table["match_status"] = "own_labels"
        table["label_origin"] = np.where(has_own, "target", "none")
        table["source_object_id"] = pd.NA
        table["match_separation_arcsec"] = np.nan
        for task in [t for t in tasks if t not in own_tasks]:  # nothing to carry them from
            table[task] = pd.array([pd.NA] * len(table), dtype="Int8")
    else:
        if source is None:
            raise ValueError("the target catalogue has no labels and there is no source catalogue to match")
        missing = [t for t in tasks if t not in source.columns]
        if missing:
            raise ValueError(f"source catalogue has no label column(s) {missing} to carry over")
        match = cross_match(table, source, radius_arcsec)
        table["match_status"] = match.match_status
        table["match_separation_arcsec"] = match.match_separation_arcsec
        matched_rows = match.source_row.to_numpy()
        has_match = matched_rows >= 0
        carried = [c for c in source.columns if c in tasks or c.removesuffix("_fraction") in tasks]
        row_or_first = np.where(has_match, matched_rows, 0)
        for column in carried + ["object_id"]:
            values = pd.Series(source[column].to_numpy()[row_or_first], index=table.index).where(has_match)
            name = "source_object_id" if column == "object_id" else column
            values = values.astype("Int8") if column in tasks else values
            if name in target.columns:  # the target's own values stay; carried ones only fill its gaps
                own = target[name].astype("Int8") if column in tasks else target[name]
                values = own.where(own.notna(), values)
            table[name] = values
        table["label_origin"] = np.where(has_own, "target", np.where(has_match, "source_match", "none"))

    new_label_counts = {}
    if new_labels is not None and len(new_labels):
        table, new_label_counts = apply_new_labels(table, new_labels)
    labelled = table[tasks].notna().any(axis=1)
    table["split"] = np.where(labelled, assign_split(table.object_id, test_fraction), "unlabelled")
    counts = {
        "n_target": int(len(table)),
        "n_matched": int((table.match_status == MATCHED).sum()),
        "n_unmatched": int((table.match_status == UNMATCHED).sum()),
        "n_ambiguous": int((table.match_status == AMBIGUOUS).sum()),
        "n_labelled": int(labelled.sum()),
        "n_pool": int((table.split == "pool").sum()),
        "n_test": int((table.split == "test").sum()),
        **new_label_counts,
    }
    counts["match_rate"] = counts["n_matched"] / counts["n_target"] if (counts["n_target"] and not own_labels) else float("nan")
    return table, counts


def attach_cutouts(table: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """Add `cutout_path` and `cutout_status`; a labelled object without a usable cutout leaves
    the pool and test set (split 'no_cutout') but stays in the table, so it is counted."""
    table = table.merge(manifest[["object_id", "path", "status"]].rename(
        columns={"path": "cutout_path", "status": "cutout_status"}), on="object_id", how="left")
    table["cutout_status"] = table.cutout_status.fillna("missing")
    unusable = table.cutout_status != "ok"
    table.loc[unusable & table.split.isin(["pool", "test"]), "split"] = "no_cutout"
    return table
