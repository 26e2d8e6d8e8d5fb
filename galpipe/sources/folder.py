"""'Bring your own survey': a folder with a catalogue (CSV or Parquet) and FITS, JPEG or PNG
cutouts. Column names are configuration; they are renamed to the data contract on reading.
Image paths must lead to files inside the folder: a row whose path leads out is kept, refused
with its reason, and counted by the cutout manifest; the other rows go on."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from galpipe.catalogs import CatalogError, read_table, renamed, resolve_inside, validate_catalog


def load_folder_catalog(folder, catalog_file: str, id_column: str, image_column: str,
                        ra_column: str | None = None, dec_column: str | None = None,
                        label_columns: dict[str, str] | None = None) -> pd.DataFrame:
    """The folder's catalogue in the contract's names, with `image_path` made absolute and
    `image_refused` the reason a row's image is not read ("" for most), its `image_path` then "".

    label_columns maps a task name to the catalogue's column holding its 0/1 label.
    """
    folder = Path(folder)
    catalog_path = folder / catalog_file
    raw = read_table(catalog_path, string_columns=(id_column, image_column))
    renames = {id_column: "object_id", image_column: "image_path"}
    if ra_column and dec_column:
        renames.update({ra_column: "ra_deg", dec_column: "dec_deg"})
    label_columns = label_columns or {}
    renames.update({column: task for task, column in label_columns.items()})
    catalog = renamed(raw, renames, str(catalog_path))
    catalog = validate_catalog(catalog, str(catalog_path), require_positions=bool(ra_column and dec_column),
                               label_columns=tuple(label_columns))
    empty = catalog.image_path.isna()
    if empty.any():
        raise CatalogError(f"{catalog_path}: empty {image_column!r} in row(s) {list(catalog.index[empty])[:10]}")
    catalog["image_path"], catalog["image_refused"] = resolve_inside(folder, catalog.image_path.astype(str))
    return catalog


def folder_manifest(catalog: pd.DataFrame) -> pd.DataFrame:
    """The cutout manifest of a folder catalogue: the user's own files, 'ok' to be opened and checked,
    or 'failed' with the reason their path was refused."""
    refused = catalog["image_refused"] if "image_refused" in catalog else pd.Series("", index=catalog.index)
    refused = refused.fillna("").astype(str)
    return pd.DataFrame({"object_id": catalog.object_id, "path": catalog.image_path,
                         "status": refused.map(lambda reason: "failed" if reason else "ok"), "reason": refused})
