"""Batch prediction: registered models applied to a folder or catalogue of cutouts, in batches,
written to a Parquet or CSV morphology catalogue as it goes. A bad image is named and counted,
never fatal: the others are still classified. Reading and preparing the images costs more than
the models do, so one thread per core each reads, prepares and classifies a batch of its own."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from galpipe.catalogs import CatalogError, read_table, refuse_duplicate_ids, require_rows, resolve_inside
from galpipe.cutouts import (
    FITS_SUFFIXES,
    IMAGE_SUFFIXES,
    STACK_SUFFIX,
    CutoutError,
    read_cutouts,
    read_stack,
    stack_address,
)
from galpipe.files import atomic_write
from galpipe.framing import ModelField, field_from_text
from galpipe.hardware import default_device, inference_model
from galpipe.preprocessing import BATCH_CUTOUTS, COLOUR_RENDERINGS, keep_freed_memory, stacked_model_inputs
from galpipe.tracking import (
    ModelRegistryError,
    load_registered_model,
    model_version,
    registered_model_name,
)
from galpipe.training import predict_proba

PR_SET_PDEATHSIG = 1  # prctl option, from <linux/prctl.h>


@dataclass
class Classifier:
    """A registered model and what its inputs must look like (from its version's tags)."""

    task: str
    model_uri: str
    module: torch.nn.Module
    input_mode: str = "bands"
    # None: each cutout whole, framed as the model's inputs were (a CentralFraction: its central part)
    field_arcsec: ModelField = 40.0
    colour_rendering: str = "lupton"  # how FITS cutouts become colour images in colour mode

    @property
    def inputs(self) -> tuple:
        """What its inputs are made with: models that agree share them."""
        return self.input_mode, self.field_arcsec, self.colour_rendering


@dataclass
class PredictionSummary:
    out_path: Path
    n_written: int = 0
    failures: list[dict] = field(default_factory=list)  # object_id, path, reason
    seconds: float = 0.0

    @property
    def galaxies_per_second(self) -> float:
        return (self.n_written + len(self.failures)) / self.seconds if self.seconds else float("nan")


def model_uris(spec: str, tasks, survey: str, experiment: str) -> list[str]:
    """A registered model's URI as it is, or an alias (e.g. `champion`) as that alias of each
    task's model in `experiment` (`<experiment>-<task>-<survey>`)."""
    if spec.startswith("models:/"):
        return [spec]
    if ":/" in spec:
        raise ModelRegistryError(f"{spec!r}: give a registered model (models:/name/version or models:/name@alias)")
    return [f"models:/{registered_model_name(experiment, task, survey)}@{spec}" for task in tasks]


def load_classifier(tracking_uri: str, model_uri: str) -> Classifier:
    """The model and, from its version's tags, its task and how its inputs are made (without
    tags: g,r,i bands over 40", colour images as Lupton composites; field "whole_image": each
    cutout whole, "central_fraction:F": its central part; galpipe.framing.field_text)."""
    version = model_version(tracking_uri, model_uri)
    task = version.tags.get("task")
    if not task:
        raise ModelRegistryError(f"{model_uri}: the model version has no `task` tag (galpipe tags every model it registers)")
    rendering = version.tags.get("colour_rendering", "lupton")
    if rendering not in COLOUR_RENDERINGS:
        raise ModelRegistryError(f"{model_uri}: colour_rendering {rendering!r} is not one this galpipe knows "
                                 f"({', '.join(COLOUR_RENDERINGS)}): a newer galpipe registered it")
    return Classifier(task, model_uri, load_registered_model(tracking_uri, model_uri),
                      version.tags.get("input_mode", "bands"), field_from_text(version.tags.get("field_arcsec", "40.0")),
                      rendering)


def list_cutouts(folder: str | None = None, catalog: str | None = None, id_column: str = "object_id",
                 image_column: str = "image_path") -> pd.DataFrame:
    """object_id, path and reason of every cutout: the image files of a folder (id = file name
    without suffix; its other files come with their path as id and the reason), or the rows of a
    CSV/Parquet catalogue (paths relative to the catalogue's folder). A catalogue row whose path
    is empty or leads outside that folder gets path "" and the reason, so it is counted as skipped
    and the rest go on."""
    if catalog:
        table = read_table(catalog, string_columns=(id_column, image_column))
        require_rows(table, str(catalog))
        missing = [c for c in (id_column, image_column) if c not in table.columns]
        if missing:
            raise CatalogError(f"{catalog}: missing column(s) {missing}; has {list(table.columns)}")
        given = table[image_column].fillna("").astype(str)
        paths, reasons = resolve_inside(Path(catalog).parent, given)
        empty = given.str.strip() == ""
        ids = table[id_column].fillna("").astype(str).str.strip()
        no_id = ids == ""  # skipped and counted, as a row without a path is
        listed = pd.DataFrame({"object_id": ids,
                               "path": ["" if e or n else p for e, n, p in zip(empty, no_id, paths)],
                               "reason": ["no object id" if n else "no image path" if e else r
                                          for e, n, r in zip(empty, no_id, reasons)]})
        refuse_duplicate_ids(listed.object_id[listed.reason == ""], str(catalog))  # rows refused already are counted
        return listed
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    everything = sorted(p for p in root.rglob("*")
                        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    files, others = [], []
    for p in everything:
        (files if p.name.lower().endswith(FITS_SUFFIXES + IMAGE_SUFFIXES) else others).append(p)
    if not files:
        raise FileNotFoundError(f"{folder}: no FITS, JPEG or PNG files")
    # Other files (a .tif, a .fits.bz2, notes) are counted and named as skipped, not passed over;
    # hidden ones (.DS_Store, .git/) are not a user's data.
    rows = [(str(p), "", "not a FITS, JPEG or PNG file: not read") for p in others]
    for path in files:
        if path.name.lower().endswith(STACK_SUFFIX):  # every galaxy of a stack, by its own object_id
            try:
                rows += [(object_id, stack_address(path, k), "") for k, object_id in enumerate(read_stack(path).object_ids)]
            except CutoutError as err:
                rows.append((path.name[: -len(STACK_SUFFIX)], str(path), err.reason))
            continue
        suffix = next(s for s in FITS_SUFFIXES + IMAGE_SUFFIXES if path.name.lower().endswith(s))
        rows.append((path.name[: -len(suffix)], str(path), ""))
    # Two files may give one id (a/123.jpg, b/123.fits): the catalogue's `path` column tells them apart.
    return pd.DataFrame(rows, columns=["object_id", "path", "reason"])


class _TableWriter:
    """Appends rows to one Parquet or CSV file (the temporary file of an atomic_write), in pieces
    of ROWS_PER_WRITE: a table per batch of 64 would cost a fair share of what its models do, and
    make as many tiny Parquet row groups."""

    ROWS_PER_WRITE = 16384

    def __init__(self, path, csv: bool):
        self.path, self.csv = path, csv
        self.parquet = None
        self.csv_started = False
        self.pending: list[dict] = []  # column -> values, one dict per batch
        self.n_pending = 0

    def write(self, rows: dict) -> None:
        self.pending.append(rows)
        self.n_pending += len(next(iter(rows.values())))
        if self.n_pending >= self.ROWS_PER_WRITE:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        table = pd.DataFrame({name: np.concatenate([np.asarray(rows[name]) for rows in self.pending])
                              for name in self.pending[0]})
        self.pending, self.n_pending = [], 0
        if self.csv:
            table.to_csv(self.path, mode="a" if self.csv_started else "w", header=not self.csv_started, index=False)
            self.csv_started = True
            return
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        if self.parquet is None:
            self.parquet = pq.ParquetWriter(self.path, arrow.schema)
        self.parquet.write_table(arrow)

    def close(self) -> None:
        self._flush()
        if self.parquet is not None:
            self.parquet.close()


class _CutoutBatches(torch.utils.data.Dataset):
    """Batch k of the cutouts, ready for the models: why each one could not be used ("" for those
    that could), and per input mode the inputs of those that could, stacked in catalogue order.
    With `object_ids`, a galaxy of a stack must be that object (galpipe.cutouts.read_cutouts)."""

    def __init__(self, paths: list[str], modes, pixel_scale_arcsec, batch_size: int, object_ids: list | None = None):
        self.paths, self.modes, self.pixel_scale_arcsec = paths, modes, pixel_scale_arcsec
        self.batch_size, self.object_ids = batch_size, object_ids

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def __getitem__(self, k: int):
        batch = slice(k * self.batch_size, (k + 1) * self.batch_size)
        paths = self.paths[batch]
        read = read_cutouts(paths, object_ids=self.object_ids[batch] if self.object_ids is not None else None)
        cutouts = [c if path else CutoutError(path, "no image path") for path, c in zip(paths, read)]
        reasons = [c.reason if isinstance(c, CutoutError) else "" for c in cutouts]
        made = {}
        for mode in self.modes:
            input_mode, field_arcsec, colour_rendering = mode
            made[mode] = stacked_model_inputs(cutouts, field_arcsec, input_mode, pixel_scale_arcsec=self.pixel_scale_arcsec,
                                              colour_rendering=colour_rendering)
            for i, error in enumerate(made[mode][1]):
                if error and not reasons[i]:
                    reasons[i] = error.reason
        usable = reasons.count("")
        # Only the galaxies that every mode could use (a stack holds its mode's usable galaxies, in order).
        return reasons, {mode: stack if len(stack) == usable else
                         stack[[not reasons[i] for i, error in enumerate(errors) if error is None]]
                         for mode, (stack, errors) in made.items()}


def _as_is(batch):
    return batch


def _die_with_parent(parent_pid: int, worker_id: int) -> None:
    """A reader process is killed with galpipe predict, even by kill -9; else it would wait on its
    pipe forever, holding its memory (Linux's parent-death signal)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def _in_order(tasks, threads: int):
    """Each task's result, in the tasks' order, `threads` of them running at once. Only a window
    of 2 x threads is queued ahead, so a survey's batches are never all held in memory."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix="galpipe-predict")
    window: collections.deque = collections.deque()
    try:
        for task in tasks:
            window.append(pool.submit(task))
            if len(window) >= 2 * threads:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:  # stopped early (an error, an interrupt): what has not started never will
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def predict_cutouts(classifiers: list[Classifier], cutouts: pd.DataFrame, out_path, threshold: float = 0.5,
                    batch_size: int = BATCH_CUTOUTS, pixel_scale_arcsec: float | None = None,
                    on_failure=None, progress: bool | None = None, workers: int = 0,
                    threads: int | None = None, check_object_ids: bool = False) -> PredictionSummary:
    """Write object_id, path, then `p_<task>` (probability) and `<task>` (class at `threshold`)
    for every task, one row per cutout that could be read. `on_failure(record)` hears of each one
    that could not. `check_object_ids`: a galaxy of a stack must be the row's object_id (as the
    pipeline's own manifests promise: a stack written again since is caught); a user's catalogue
    may name the galaxies its own way, so not by default.

    By default `threads` threads (default: torch's thread count, one per core) each read, prepare
    and classify a batch of their own on one core: preparing a galaxy is mostly numpy on one core,
    so one batch after another left a core idle much of the time (bench/predict_reader.py: 1.21x
    on 2 cores). torch is set to one thread while they run (process-wide; restored after). With
    `workers` > 0, that many processes (a torch DataLoader's) read and prepare the batches
    instead, and this process classifies them with all of torch's threads (`threads` unused): for
    readers that hold Python's lock, as astropy's did."""
    if not classifiers:
        raise ValueError("no models to predict with")
    summary = PredictionSummary(Path(out_path))
    if not summary.out_path.name.lower().endswith((".parquet", ".csv")):
        raise ValueError(f"{out_path}: the output must end in .parquet or .csv")
    started = time.perf_counter()
    keep_freed_memory()
    columns = ["object_id", "path"] + [c for k in classifiers for c in (f"p_{k.task}", k.task)]
    modes = sorted({k.inputs for k in classifiers}, key=str)
    device = default_device()
    prepared_models = [inference_model(k.module, device) for k in classifiers]
    threads = threads or torch.get_num_threads()
    batches = _CutoutBatches(list(cutouts.path), modes, pixel_scale_arcsec, batch_size,
                             list(cutouts.object_id) if check_object_ids else None)

    def classified(batch):
        """A batch's reasons (why each galaxy could not be used, "" for those that could) and
        each task's probabilities for those that could."""
        reasons, inputs = batch
        return reasons, {k.task: predict_proba(module, inputs[k.inputs], device=device, prepare=False)
                         for k, module in zip(classifiers, prepared_models)}

    torch_threads = 1 if threads > 1 and not workers else torch.get_num_threads()

    def results():
        """Each batch's reasons and probabilities, in catalogue order."""
        if workers:  # workers read up to two batches each ahead
            for batch in torch.utils.data.DataLoader(batches, batch_size=None, num_workers=workers, collate_fn=_as_is,
                                                     worker_init_fn=functools.partial(_die_with_parent, os.getpid())):
                yield classified(batch)
        else:
            yield from _in_order((lambda k=k: classified(batches[k]) for k in range(len(batches))), threads)

    # Why list_cutouts refused a row (a path outside the catalogue's folder), said instead of "no image path".
    refused = cutouts["reason"].tolist() if "reason" in cutouts else [""] * len(cutouts)
    object_ids, paths = cutouts.object_id.tolist(), cutouts.path.tolist()

    def write_catalogue(tmp) -> None:  # batch after batch, into a file that is renamed once complete
        writer = _TableWriter(tmp, csv=summary.out_path.name.lower().endswith(".csv"))
        try:
            # closing: stopped early (an error, an interrupt), the readers stop now, not when collected.
            with tqdm(total=len(cutouts), desc="predict", unit="galaxy", disable=progress is False) as bar, \
                    _torch_threads(torch_threads), contextlib.closing(results()) as batch_results:
                for start, (reasons, probabilities) in zip(range(0, len(cutouts), batch_size), batch_results):
                    good = []
                    for i, reason in enumerate(reasons, start):
                        if reason:
                            record = {"object_id": object_ids[i], "path": paths[i], "reason": refused[i] or reason}
                            summary.failures.append(record)
                            if on_failure:
                                on_failure(record)
                            continue
                        good.append(i)
                    bar.update(len(reasons))
                    if not good:
                        continue
                    rows = {"object_id": [object_ids[i] for i in good], "path": [paths[i] for i in good]}
                    for k in classifiers:
                        rows[f"p_{k.task}"] = probabilities[k.task]
                        rows[k.task] = (probabilities[k.task] >= threshold).astype(np.int8)
                    writer.write(rows)
                    summary.n_written += len(good)
            if summary.n_written == 0:  # keep the columns, so a reader finds an empty catalogue
                writer.write({c: np.zeros(0, np.float32 if c.startswith("p_") else object) for c in columns})
        finally:
            writer.close()

    atomic_write(summary.out_path, write_catalogue)
    summary.seconds = time.perf_counter() - started
    failed_path = summary.out_path.with_name(summary.out_path.name + ".failed.csv")
    if summary.failures:
        atomic_write(failed_path, lambda tmp: pd.DataFrame(summary.failures).to_csv(tmp, index=False))
    else:
        failed_path.unlink(missing_ok=True)  # a list from an earlier run would describe another catalogue
    return summary

