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
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from galpipe.catalogs import CatalogError, read_table, validate_catalog

LABEL_SUFFIXES = (".csv", ".parquet")
IN_PROGRESS_SUFFIXES = (".part", ".tmp")
LABEL_SETTLE_SECONDS = 30.0
ORIGIN = "target_labels"


@dataclass(frozen=True)
class LabelFolder:
    """One listing of a labels folder, in name order: the complete label files (each with the
    modification time and size it had when listed), those modified less than `settle_seconds`
    before, and files of another kind (neither a label file nor one in progress), never read.
    matched_catalog reads, records and reports from one listing, so a file that settles or
    arrives meanwhile is in all three or in none (a later run takes it). A file rewritten between
    the listing and the reading is recorded with its old stamp, so the sensor asks for it again."""

    folder: Path
    complete: dict[Path, str]  # path -> its stamp, "<mtime ns>:<size>"
    settling: list[Path]
    other: list[Path]
    settle_seconds: float

    def skipped(self) -> dict[str, str]:
        """File name -> why it is not read now: not yet settled (taken by a later run), or not a
        label file at all (only .csv and .parquet are; e.g. a compressed `labels.csv.gz`)."""
        return {**{p.name: f"modified less than {self.settle_seconds:g} s ago: taken by a later run" for p in self.settling},
                **{p.name: f"not a label file (only {' and '.join(LABEL_SUFFIXES)} are read)" for p in self.other}}

    def state(self, tasks, known: dict | None = None) -> dict[str, dict]:
        """File name -> its stamp (modification time and size) and the tasks it labels: what
        matched_catalog records as used, and what the sensor compares with that to notice new,
        changed or deleted files. A file whose stamp is in `known` is not read again (the sensor
        looks every minute)."""
        state = {}
        for path, stamp in self.complete.items():
            seen = (known or {}).get(path.name, {})
            state[path.name] = {"stamp": stamp, "tasks": seen["tasks"] if seen.get("stamp") == stamp else tasks_in(path, tasks)}
        return state

    def read(self, tasks) -> pd.DataFrame:
        """All the complete label files, later names overriding earlier ones: object_id plus a column per task."""
        return self.read_with_state(tasks)[0]

    def read_with_state(self, tasks) -> tuple[pd.DataFrame, dict[str, list[str]], dict[str, dict]]:
        """read(); per file the columns it has that are neither object_id nor a task of the project
        (a misspelt task such as `Bar` or `edge-on`, or a task this project does not have: their
        values are not used, so matched_catalog names them); and state(), all from one reading of
        each file (a survey's label file may be large): what matched_catalog uses, reports and
        records."""
        frames, unread, state = [], {}, {}
        for path, stamp in self.complete.items():
            table = read_table(path)
            present = [t for t in tasks if t in table.columns]
            state[path.name] = {"stamp": stamp, "tasks": present}
            if not present:
                raise CatalogError(f"{path}: no label column; expected one or more of {list(tasks)}")
            others = [str(c) for c in table.columns if c != "object_id" and c not in present]
            if others:
                unread[path.name] = others
            frames.append(validate_catalog(table, str(path), require_positions=False,
                                           label_columns=tuple(present))[["object_id", *present]])
        if not frames:
            return pd.DataFrame({"object_id": pd.Series(dtype=str)}), unread, state
        combined = pd.concat(frames, ignore_index=True)
        # Files in name order (so labels_10.csv comes before labels_9.csv): the last non-empty value wins.
        return combined.groupby("object_id", sort=False).last(skipna=True).reset_index(), unread, state


def scan_label_folder(folder, settle_seconds: float = LABEL_SETTLE_SECONDS) -> LabelFolder:
    """The folder listed once (see the module's rule and LabelFolder)."""
    folder = Path(folder)
    complete, settling, other = {}, [], []
    if not folder.is_dir():
        return LabelFolder(folder, complete, settling, other, settle_seconds)
    now = time.time()
    for path in sorted(folder.iterdir()):
        name = path.name.lower()
        if name.startswith(".") or name.endswith(IN_PROGRESS_SUFFIXES):
            continue
        try:
            if not path.is_file():  # a folder inside is not a file someone meant as labels
                continue
            stat = path.stat()
        except FileNotFoundError:  # renamed or removed while we looked
            continue
        if path.suffix.lower() not in LABEL_SUFFIXES:
            other.append(path)
        elif now - stat.st_mtime < settle_seconds:
            settling.append(path)
        else:
            complete[path] = f"{stat.st_mtime_ns}:{stat.st_size}"
    return LabelFolder(folder, complete, settling, other, settle_seconds)


def label_files(folder, settle_seconds: float = LABEL_SETTLE_SECONDS) -> list[Path]:
    """The complete label files, in name order (see the module's rule)."""
    return list(scan_label_folder(folder, settle_seconds).complete)


def settling_label_files(folder, settle_seconds: float = LABEL_SETTLE_SECONDS) -> list[Path]:
    """Label files modified less than `settle_seconds` ago: perhaps still being written, not taken yet."""
    return scan_label_folder(folder, settle_seconds).settling


def skipped_label_files(folder, settle_seconds: float = LABEL_SETTLE_SECONDS) -> dict[str, str]:
    """LabelFolder.skipped of a new listing."""
    return scan_label_folder(folder, settle_seconds).skipped()


def label_files_state(folder, tasks, known: dict | None = None,
                      settle_seconds: float = LABEL_SETTLE_SECONDS) -> dict[str, dict]:
    """LabelFolder.state of a new listing."""
    return scan_label_folder(folder, settle_seconds).state(tasks, known)


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
    """LabelFolder.read of a new listing."""
    return scan_label_folder(folder, settle_seconds).read(tasks)


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
