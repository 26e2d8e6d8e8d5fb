"""Target-survey labels that arrive later: CSV or Parquet files dropped into
`data/<profile>/labels/`, each with `object_id` and one or more task columns (0, 1 or empty).
They take precedence over labels carried across by the cross-match (a label made on the target
survey's own image is the better one); ids the target catalogue lacks are counted, not dropped
silently.

A file is taken only once it is complete. Names starting with "." or ending in ".part" or
".tmp" are never read: write `.labels.csv.part` (or `labels.csv.tmp`), then rename it to
`labels.csv`, and the file appears whole in one step. A file modified less than
LABEL_SETTLE_SECONDS (30 s) ago is not taken yet either (a copy still in progress); the sensor
skips, naming it, and looks again on a later tick.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from galpipe.catalogs import CatalogError, read_table, validate_catalog

LABEL_SUFFIXES = (".csv", ".parquet")
IN_PROGRESS_SUFFIXES = (".part", ".tmp")
LABEL_SETTLE_SECONDS = 30.0
ORIGIN = "target_labels"


def _scan(folder, settle_seconds: float) -> tuple[list[Path], list[Path], list[Path]]:
    """Label files in name order: those complete, those modified less than `settle_seconds` ago,
    and files of another kind (neither a label file nor one in progress), which are never read."""
    folder = Path(folder)
    complete, settling, other = [], [], []
    if not folder.is_dir():
        return complete, settling, other
    now = time.time()
    for path in sorted(folder.iterdir()):
        name = path.name.lower()
        if name.startswith(".") or name.endswith(IN_PROGRESS_SUFFIXES):
            continue
        try:
            if not path.is_file():  # a folder inside is not a file someone meant as labels
                continue
            modified = path.stat().st_mtime
        except FileNotFoundError:  # renamed or removed while we looked
            continue
        if path.suffix.lower() not in LABEL_SUFFIXES:
            other.append(path)
        else:
            (settling if now - modified < settle_seconds else complete).append(path)
    return complete, settling, other


def label_files(folder, settle_seconds: float = LABEL_SETTLE_SECONDS) -> list[Path]:
    """The complete label files, in name order (see the module's rule)."""
    return _scan(folder, settle_seconds)[0]


def settling_label_files(folder, settle_seconds: float = LABEL_SETTLE_SECONDS) -> list[Path]:
    """Label files modified less than `settle_seconds` ago: perhaps still being written, not taken yet."""
    return _scan(folder, settle_seconds)[1]


def skipped_label_files(folder, settle_seconds: float = LABEL_SETTLE_SECONDS) -> dict[str, str]:
    """File name -> why it is not read now: not yet settled (taken by a later run), or not a label
    file at all (only .csv and .parquet are; e.g. a compressed `labels.csv.gz`)."""
    _, settling, other = _scan(folder, settle_seconds)
    return {**{p.name: f"modified less than {settle_seconds:g} s ago: taken by a later run" for p in settling},
            **{p.name: f"not a label file (only {' and '.join(LABEL_SUFFIXES)} are read)" for p in other}}


def label_files_state(folder, tasks, known: dict | None = None,
                      settle_seconds: float = LABEL_SETTLE_SECONDS) -> dict[str, dict]:
    """File name -> its modification time and size, and the tasks it labels: what matched_catalog
    records as used, and what the sensor compares with that to notice new, changed or deleted files.
    A file whose stamp is in `known` is not read again (the sensor looks every minute)."""
    state = {}
    for path in label_files(folder, settle_seconds):
        stamp = f"{path.stat().st_mtime_ns}:{path.stat().st_size}"
        seen = (known or {}).get(path.name, {})
        unchanged = seen.get("stamp") == stamp
        state[path.name] = {"stamp": stamp, "tasks": seen["tasks"] if unchanged else tasks_in(path, tasks)}
    return state


def changed_files_and_tasks(used: dict, now: dict) -> tuple[list[str], list[str]]:
    """Files new, changed or deleted since `used`, and every task they labelled before or label now
    (a task whose column was removed must be refitted too)."""
    changed = sorted(name for name in used.keys() | now.keys()
                     if used.get(name, {}).get("stamp") != now.get(name, {}).get("stamp"))
    tasks = {t for name in changed for state in (used.get(name, {}), now.get(name, {})) for t in state.get("tasks", [])}
    return changed, sorted(tasks)


def tasks_in(path, tasks) -> list[str]:
    columns = read_table(path).columns
    return [t for t in tasks if t in columns]


def read_new_labels(folder, tasks, settle_seconds: float = LABEL_SETTLE_SECONDS) -> pd.DataFrame:
    """All complete label files, later names overriding earlier ones: object_id plus a column per task."""
    frames = []
    for path in label_files(folder, settle_seconds):
        present = tasks_in(path, tasks)
        if not present:
            raise CatalogError(f"{path}: no label column; expected one or more of {list(tasks)}")
        frames.append(validate_catalog(read_table(path), str(path), require_positions=False,
                                       label_columns=tuple(present))[["object_id", *present]])
    if not frames:
        return pd.DataFrame({"object_id": pd.Series(dtype=str)})
    combined = pd.concat(frames, ignore_index=True)
    # Files in name order (so labels_10.csv comes before labels_9.csv): the last non-empty value wins.
    return combined.groupby("object_id", sort=False).last(skipna=True).reset_index()


def new_label_flag(task: str) -> str:
    """The column that marks the galaxies whose `task` label came from a labels file."""
    return f"{task}_label_is_new"


def apply_new_labels(table: pd.DataFrame, labels: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """`table` with the new labels written over its task columns, a `<task>_label_is_new` flag
    per task, and `label_origin` set where any task got a new label. Empty cells change nothing."""
    table = table.copy()
    known = labels.object_id.isin(table.object_id)
    unknown = labels.object_id[~known].tolist()
    by_id = labels[known].set_index("object_id")
    any_new = pd.Series(False, index=table.index)
    for task in by_id.columns:
        new = table.object_id.map(by_id[task])
        has = new.notna()
        if task not in table:
            table[task] = pd.Series(pd.NA, index=table.index, dtype="Int8")
        table.loc[has, task] = new[has].astype("Int8")
        table[new_label_flag(task)] = has
        any_new |= has
    table.loc[any_new, "label_origin"] = ORIGIN
    return table, {"n_new_labels": int(any_new.sum()), "n_new_labels_unknown_id": len(unknown),
                   "new_labels_unknown_ids": unknown[:20]}
