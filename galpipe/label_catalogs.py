"""Binary task labels from the published morphology catalogues the paper builds on:

- Galaxy Zoo 2 (Willett et al. 2013; Hart et al. 2016 debiased fractions): vote fractions per
  answer, where edge-on and bar are asked only of galaxies with features, and bar only of those
  not edge-on, so each child label also needs its parents' answers.
- DS18 (Dominguez Sanchez et al. 2018): CNN probabilities P_disk, P_edge_on, P_bar_GZ2.

A label is 1 when its own fraction and every answer on the path to its question exceed
`threshold`, else 0 (a galaxy that went down another branch is a 0 whatever its own fraction).
Where a needed value is missing the label stays empty; the counts are returned."""

from __future__ import annotations

import numpy as np
import pandas as pd

from galpipe.catalogs import CatalogError

# scheme -> task -> (column, parent tasks that must be 1 for the question to be asked)
SCHEMES = {
    "gz2": {
        "featured": ("t01_smooth_or_features_a02_features_or_disk_debiased", ()),
        "edge_on": ("t02_edgeon_a04_yes_debiased", ("featured",)),
        "bar": ("t03_bar_a06_bar_debiased", ("featured", "not_edge_on")),
    },
    "ds18": {
        "featured": ("P_disk", ()),
        "edge_on": ("P_edge_on", ()),
        "bar": ("P_bar_GZ2", ()),
    },
}


def labels_from_catalog(table: pd.DataFrame, scheme: str, threshold: float = 0.5,
                        where: str = "catalogue") -> tuple[pd.DataFrame, dict]:
    """`table` with task columns (Int8: 1, 0 or missing) and `<task>_fraction` added from the
    scheme's columns; returns it with the number of galaxies left unlabelled per task."""
    if scheme not in SCHEMES:
        raise CatalogError(f"{where}: unknown label scheme {scheme!r}; known: {sorted(SCHEMES)}")
    columns = {task: column for task, (column, _) in SCHEMES[scheme].items()}
    missing = [c for c in columns.values() if c not in table.columns]
    if missing:
        raise CatalogError(f"{where}: label scheme {scheme!r} needs column(s) {missing}; has {list(table.columns)}")
    table = table.copy()
    fractions = {}
    for task, column in columns.items():
        values = pd.to_numeric(table[column], errors="coerce")
        given = table[column].notna() & (table[column].astype(str).str.strip() != "")
        bad = given & ~values.between(0, 1)  # text where a number belongs is an error, not a gap
        if bad.any():
            raise CatalogError(f"{where}: {column} must lie in [0, 1] in row(s) {list(table.index[bad])[:10]}")
        fractions[task] = values
    fractions["not_edge_on"] = 1 - fractions["edge_on"]
    unlabelled = {}
    for task, (_, parents) in SCHEMES[scheme].items():
        path = fractions[task].copy()
        known = path.notna()
        elsewhere = pd.Series(False, index=table.index)  # answered another branch: surely a 0
        for parent in parents:  # a child question is only asked down its parents' branch
            elsewhere |= fractions[parent].notna() & (fractions[parent] <= threshold)
            path = path.where(fractions[parent] > threshold, 0.0)
            known &= fractions[parent].notna()
        label = pd.Series(np.where(path > threshold, 1, 0), index=table.index).where(known | elsewhere)
        table[task] = label.astype("Int8")
        table[f"{task}_fraction"] = fractions[task]
        unlabelled[task] = int(label.isna().sum())
    return table, unlabelled
