"""Catalogue files (CSV or Parquet): reading, checking against the data contract, and writing
atomically. Every problem is reported with the file and the offending rows or columns.

The contract: `object_id` (unique string), `ra_deg`, `dec_deg` (ICRS degrees, optional for a
folder without positions), and label columns named after the tasks (0/1, may be missing).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from galpipe.files import atomic_write

MAX_ROWS_IN_MESSAGE = 10


class CatalogError(ValueError):
    """A catalogue that breaks the data contract; the message names the file, rows or columns."""


def read_table(path, string_columns=("object_id",)) -> pd.DataFrame:
    """A CSV or Parquet catalogue. CSV columns named in `string_columns` (those that exist) are read
    as text, so ids `007` and `7` stay two ids; Parquet keeps the types it was written with."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"{path}: catalogue file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path, dtype={column: str for column in string_columns})
    except Exception as err:  # pandas and pyarrow raise many types for a damaged file
        raise CatalogError(f"{path}: cannot read catalogue ({err})") from None
    raise CatalogError(f"{path}: unknown catalogue format {suffix!r} (use .csv or .parquet)")


def require_rows(df: pd.DataFrame, where: str) -> None:
    """A catalogue with a header and no rows is a mistake (a truncated export, the wrong file), not an
    empty survey."""
    if len(df) == 0:
        raise CatalogError(f"{where}: no rows (only a header {list(df.columns)})")


def resolve_inside(folder, paths) -> tuple[list[str], list[str]]:
    """Each catalogue image path made absolute against `folder`, or "" with the reason it is
    refused: a path that leads outside the folder (`../../etc/passwd`, an absolute path elsewhere)
    is never read. The check is on the path as written: a symlink inside the folder is the
    folder owner's choice (images kept on another disk) and is followed. Returns (paths,
    reasons), reason "" where the path is fine."""
    root = os.path.abspath(folder)
    resolved, reasons = [], []
    for given in map(str, paths):
        path = os.path.normpath(os.path.join(root, given))  # an absolute `given` replaces root
        inside = os.path.commonpath([root, path]) == root
        resolved.append(path if inside else "")
        reasons.append("" if inside else f"image path {given!r} leads outside the catalogue folder {root}")
    return resolved, reasons


def renamed(table: pd.DataFrame, renames: dict[str, str], where: str) -> pd.DataFrame:
    """`table` with the columns named by `renames` (yours -> the data contract's) renamed; a
    missing one is an error naming `where` and the columns there are."""
    missing = [c for c in renames if c not in table.columns]
    if missing:
        raise CatalogError(f"{where}: missing column(s) {missing}; has {list(table.columns)}")
    # A column already named as another becomes would leave two of that name.
    kept = set(table.columns) - {yours for yours, ours in renames.items() if yours != ours}
    targets = [ours for yours, ours in renames.items() if yours != ours]
    clashes = [f"{yours!r} -> {ours!r}" for yours, ours in renames.items()
               if yours != ours and (ours in kept or targets.count(ours) > 1)]
    if clashes:
        raise CatalogError(f"{where}: renaming {', '.join(clashes)} would give two columns of that name; "
                           "rename or drop the existing one, or name it in the project file instead")
    return table.rename(columns=renames)


def write_parquet(df: pd.DataFrame, path, metadata: dict[str, str] | None = None) -> None:
    """`df` as Parquet, atomically; `metadata` goes into the file's key-value metadata."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               **{k.encode(): v.encode() for k, v in metadata.items()}})
    atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp))


def _rows(index) -> str:
    rows = [str(i) for i in list(index)[:MAX_ROWS_IN_MESSAGE]]
    more = len(index) - len(rows)
    return ", ".join(rows) + (f" and {more} more" if more > 0 else "")


def refuse_duplicate_ids(object_ids: pd.Series, where: str) -> None:
    """Ids name galaxies: two rows of one id are a mistake, named by id and row (the Series' index)."""
    duplicated = object_ids.duplicated(keep=False)
    if duplicated.any():
        ids = sorted(set(object_ids[duplicated]))
        raise CatalogError(f"{where}: duplicate object_id {ids[:MAX_ROWS_IN_MESSAGE]} in row(s) "
                           f"{_rows(object_ids.index[duplicated])}")


def validate_catalog(df: pd.DataFrame, where: str, require_positions: bool = True,
                     label_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """Check `df` against the contract and return it with normalised types.

    `where` names the file (or asset) in messages; rows are counted from 0 as data rows.
    """
    require_rows(df, where)
    required = ["object_id"] + (["ra_deg", "dec_deg"] if require_positions else [])
    missing = [c for c in required + list(label_columns) if c not in df.columns]
    if missing:
        raise CatalogError(f"{where}: missing column(s) {missing}; has {list(df.columns)}")
    df = df.copy()
    if df.object_id.isna().any():
        raise CatalogError(f"{where}: empty object_id in row(s) {_rows(df.index[df.object_id.isna()])}")
    df["object_id"] = df.object_id.astype(str)
    refuse_duplicate_ids(df.object_id, where)
    if require_positions:
        for column, inclusive, valid_range in (("ra_deg", "left", "[0, 360)"), ("dec_deg", "both", "[-90, 90]")):
            low, high = (0.0, 360.0) if column == "ra_deg" else (-90.0, 90.0)
            values = pd.to_numeric(df[column], errors="coerce")
            bad = ~values.between(low, high, inclusive=inclusive) | values.isna()
            if bad.any():
                raise CatalogError(f"{where}: {column} out of range {valid_range} or not a number "
                                   f"in row(s) {_rows(df.index[bad])}")
            df[column] = values.astype(float)
    for column in label_columns:
        values = pd.to_numeric(df[column], errors="coerce")
        given = df[column].notna() & (df[column].astype(str).str.strip() != "")
        bad = given & ~values.isin([0, 1])  # "yes", "1.5", "x": an error, never read as empty
        if bad.any():
            raise CatalogError(f"{where}: label {column!r} must be 0 or 1 (or empty) in row(s) "
                               f"{_rows(df.index[bad])}")
        df[column] = values.astype("Int8")
    return df


def class_balance(df: pd.DataFrame, tasks) -> dict[str, dict[str, float]]:
    """Per task: number labelled and fraction of positives."""
    balance = {}
    for task in tasks:
        labels = df[task].dropna() if task in df else pd.Series(dtype=float)
        balance[task] = {"n_labelled": int(len(labels)),
                         "positive_fraction": float(np.mean(labels)) if len(labels) else float("nan")}
    return balance
