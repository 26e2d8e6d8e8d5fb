"""MLflow tracking and registry for galpipe's training runs: a run that fails is marked
FAILED (never left RUNNING; one whose process was killed is marked FAILED on the next start),
models are logged with a signature, without pickle, and registered, the champion is an alias.
Writes to the SQLite store are retried when it is locked. A project folder can be copied or
moved: the store's artifact paths follow it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import random
import sqlite3
import tempfile
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo

from galpipe.links import RESULTS_VIEW_TAG, results_view_state
from galpipe.liveness import TAG as PROCESS_TAG
from galpipe.liveness import process_is_gone, process_token
from galpipe.models import ARCHITECTURE_FILE, WEIGHTS_FILE, ModelFileError, load_model_files, save_model_files

# One line per download instead of a progress bar each time a model is loaded.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
PYFUNC_CODE = str(Path(__file__).with_name("pyfunc_model.py"))  # the model's MLflow code (models from code)

# Logged with each model so MLflow does not spend seconds inferring requirements per run.
MODEL_PIP_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}",
                          f"safetensors=={importlib.metadata.version('safetensors')}"]


def registered_model_name(experiment: str, task: str, survey: str) -> str:
    """The registry name of an experiment's models of `task` trained for `survey` (e.g.
    galpipe-small-bar-des): each experiment has its own, so no run of one can move another's
    `champion` alias."""
    return f"{experiment}-{task}-{survey}"


class ModelRegistryError(LookupError):
    """A registered model or version that is missing or cannot be loaded."""


def with_retry(call, attempts: int = 8):
    """Run `call()`, retrying while the SQLite store is locked by another writer."""
    for attempt in range(attempts):
        try:
            return call()
        except MlflowException as err:
            if "locked" not in str(err).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt * (1 + random.random()))


# Where MLflow's SQLite store (MLflow 3.17 schema) keeps absolute artifact paths, and the
# experiment tag that records the mlruns/ folder they were written for.
ARTIFACT_PATH_COLUMNS = {"experiments": "artifact_location", "runs": "artifact_uri",
                         "logged_models": "artifact_location", "model_versions": "storage_location"}
MLRUNS_DIR_TAG = "galpipe.mlruns_dir"


LOCAL_TRACKING_URI = "sqlite:///mlruns/mlflow.db"  # in the project folder


def default_tracking_uri() -> str:
    """MLflow's MLFLOW_TRACKING_URI where set, else the project's own SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or LOCAL_TRACKING_URI


def sqlite_path(tracking_uri: str) -> Path | None:
    return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None


def absolute_tracking_uri(tracking_uri: str) -> str:
    """A SQLite store's URI with its path made absolute from the current folder: MLflow keeps one
    store per URI string in a process, so a relative one would stay bound to the first folder."""
    db = sqlite_path(tracking_uri)
    return f"sqlite:///{db.resolve()}" if db is not None and not db.is_absolute() else tracking_uri


def follow_project_move(tracking_uri: str) -> None:
    """MLflow stores artifact locations as absolute paths; after the project was copied or moved,
    a copy would read and write the original's mlruns/. Re-point every path under the recorded
    mlruns/ folder at the store's own folder (a no-op when nothing moved, or for a server store)."""
    db = sqlite_path(tracking_uri)
    if db is None or not db.is_file():
        return
    here = str(db.resolve().parent)
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as store, store:
        if not store.execute("SELECT 1 FROM sqlite_master WHERE name = 'experiment_tags'").fetchone():
            return
        recorded = {row[0] for row in store.execute("SELECT value FROM experiment_tags WHERE key = ?",
                                                    (MLRUNS_DIR_TAG,))}
        for old in recorded - {here}:
            for old_prefix, new_prefix in ((Path(old).as_uri(), Path(here).as_uri()), (old, here)):
                for table, column in ARTIFACT_PATH_COLUMNS.items():
                    store.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608
                                  f"WHERE substr({column}, 1, ?) = ?",
                                  (new_prefix, len(old_prefix) + 1, len(old_prefix) + 1, old_prefix + "/"))
            store.execute("UPDATE experiment_tags SET value = ? WHERE key = ? AND value = ?", (here, MLRUNS_DIR_TAG, old))


def fail_stale_runs(client: MlflowClient) -> list[str]:
    """Mark FAILED the RUNNING runs whose process is gone (killed before it could end them);
    returns their ids."""
    experiments = [e.experiment_id for e in with_retry(lambda: client.search_experiments())]
    running = with_retry(lambda: client.search_runs(experiments, "attributes.status = 'RUNNING'")) if experiments else []
    stale = [run for run in running if process_is_gone(run.data.tags.get(PROCESS_TAG, ""))]
    for run in stale:
        with_retry(lambda: client.set_tag(run.info.run_id, "error", "its process ended without closing the run "
                                          f"(killed?): {run.data.tags[PROCESS_TAG]}"))
        with_retry(lambda: client.set_terminated(run.info.run_id, "FAILED"))
    return [run.info.run_id for run in stale]


class LoggedVersion(NamedTuple):
    """A logged and registered model: 'models:/name/version', the version, and MLflow's id of the
    logged model (metrics logged with it are linked to the model)."""
    uri: str
    version: str
    model_id: str


class Tracker:
    def __init__(self, tracking_uri: str, artifact_root: str, experiment: str, project: str = ""):
        tracking_uri = absolute_tracking_uri(tracking_uri)
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment  # the MLflow experiment, and the prefix of registered names
        # On every run and registered model version, so the MLflow UI can filter by either.
        self.tags = {"galpipe.experiment": experiment, **({"galpipe.project": project} if project else {})}
        follow_project_move(tracking_uri)
        mlflow.set_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri)
        found = with_retry(lambda: self.client.get_experiment_by_name(experiment))
        if found is None:
            artifact_location = None  # a tracking server keeps artifacts where it was told to
            if sqlite_path(tracking_uri) is not None:
                Path(artifact_root).mkdir(parents=True, exist_ok=True)
                artifact_location = Path(artifact_root).resolve().as_uri()
            try:
                self.experiment_id = with_retry(lambda: self.client.create_experiment(experiment, artifact_location))
            except MlflowException:  # created meanwhile by a parallel run
                self.experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        else:
            self.experiment_id = found.experiment_id
        if found is None or RESULTS_VIEW_TAG not in found.tags:  # the runs table galpipe saves for this experiment
            with_retry(lambda: self.client.set_experiment_tag(self.experiment_id, RESULTS_VIEW_TAG, results_view_state()))
        db = sqlite_path(tracking_uri)
        if db is not None and (found is None or MLRUNS_DIR_TAG not in found.tags):
            with_retry(lambda: self.client.set_experiment_tag(self.experiment_id, MLRUNS_DIR_TAG,
                                                              str(db.resolve().parent)))

    @contextlib.contextmanager
    def run(self, name: str, tags: dict, params: dict):
        """An MLflow run that ends FINISHED, or FAILED (with the error as a tag) if the body raises."""
        tags = {**self.tags, **{k: str(v) for k, v in tags.items()}, PROCESS_TAG: process_token()}
        run = with_retry(lambda: self.client.create_run(self.experiment_id, run_name=name, tags=tags))
        run_id = run.info.run_id
        try:
            self.log_params(run_id, params)
            yield run_id
        except BaseException as err:
            message = f"{type(err).__name__}: {err}"[:5000]
            with_retry(lambda: self.client.set_tag(run_id, "error", message))
            with_retry(lambda: self.client.set_terminated(run_id, "FAILED"))
            raise
        with_retry(lambda: self.client.set_terminated(run_id, "FINISHED"))

    def log_metrics(self, run_id: str, metrics: dict, step: int = 0, model_id: str | None = None) -> None:
        """`model_id` (of `log_model`'s ModelInfo) links the metrics to a model logged before them."""
        timestamp = int(time.time() * 1000)
        entries = [mlflow.entities.Metric(k, float(v), timestamp, step, model_id=model_id) for k, v in metrics.items()
                   if v is not None and np.isfinite(v)]
        with_retry(lambda: self.client.log_batch(run_id, metrics=entries))

    def log_params(self, run_id: str, params: dict) -> None:
        with_retry(lambda: self.client.log_batch(run_id, params=[
            mlflow.entities.Param(k, str(v)[:6000]) for k, v in params.items()]))

    def log_history(self, run_id: str, history: list[dict], keys=("train_loss", "val_loss")) -> None:
        """Per-epoch curves (step = epoch) in a few batched writes rather than one per epoch,
        with the training time: `train_seconds` and `train_images_per_second`."""
        timestamp = int(time.time() * 1000)
        entries = [mlflow.entities.Metric(k, float(r[k]), timestamp, r["epoch"]) for r in history for k in keys]
        seconds = sum(r.get("seconds", 0.0) for r in history)
        if seconds > 0:
            entries += [mlflow.entities.Metric("train_seconds", seconds, timestamp, 0),
                        mlflow.entities.Metric("train_images_per_second",
                                               sum(r["images"] for r in history) / seconds, timestamp, 0)]
        for start in range(0, len(entries), 1000):  # MLflow's limit per batch
            with_retry(lambda: self.client.log_batch(run_id, metrics=entries[start:start + 1000]))

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        with_retry(lambda: self.client.log_artifact(run_id, str(path), folder))

    def log_and_register_model(self, run_id: str, model: torch.nn.Module, input_example: np.ndarray,
                               registered_name: str, tags: dict | None = None) -> LoggedVersion:
        """log_model, then register."""
        return self.register(self.log_model(run_id, model, input_example), registered_name, tags)

    def log_model(self, run_id: str, model: torch.nn.Module, input_example: np.ndarray) -> ModelInfo:
        """Log the model to the run (not yet registered); it is left on its device.

        The model is logged without pickle: weights in safetensors and the architecture as JSON
        (galpipe.models.save_model_files), with galpipe.pyfunc_model as its MLflow pyfunc code, so
        `mlflow.pyfunc.load_model` and `mlflow models serve` can still use it.

        MLflow links the run's metrics logged so far to the model by reading back every metric's
        history (0.03 s of a run with galpipe's ~20 metrics): a run that logs its model first, then
        its test metrics with `model_id=info.model_id`, gets those linked without that."""
        device = next(model.parameters()).device
        model = model.cpu().eval()
        with torch.no_grad():
            output = torch.sigmoid(model(torch.from_numpy(input_example))).numpy()
        signature = infer_signature(input_example, output)
        with tempfile.TemporaryDirectory() as folder:
            weights, architecture = save_model_files(model, folder)
            # The signature (from the model's own output above) says what the model takes; no input
            # example, whose check made MLflow load the saved model back and predict: 0.09 s of every
            # run, 9% of a `small` fine-tuning partition of 25 labels. test_hardening loads the logged
            # model with MLflow's own loader instead.
            # Logged in the run made active again: mlflow.models.Model.log(run_id=...) would save the
            # ~12 ms this costs, but files the logged model under MLflow's Default experiment. MLflow's
            # warning that no input example was given (two lines a model) is not shown: the signature
            # is given on purpose.
            with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*An input example was not provided")
                info = with_retry(lambda: mlflow.pyfunc.log_model(
                    name="model", python_model=PYFUNC_CODE, artifacts={"weights": str(weights),
                                                                       "architecture": str(architecture)},
                    signature=signature, pip_requirements=MODEL_PIP_REQUIREMENTS))
        model.to(device)
        return info

    def register(self, info: ModelInfo, registered_name: str, tags: dict | None = None) -> LoggedVersion:
        """Register a logged model; `tags` go on the model version (galpipe puts there what a user of
        the model needs: task, input mode, field)."""
        tags = {**self.tags, **{k: str(v) for k, v in (tags or {}).items()}}
        version = with_retry(lambda: mlflow.register_model(info.model_uri, registered_name, tags=tags)).version
        return LoggedVersion(f"models:/{registered_name}/{version}", str(version), info.model_id)

    def set_alias(self, registered_name: str, alias: str, version: str) -> None:
        with_retry(lambda: self.client.set_registered_model_alias(registered_name, alias, version))


def model_version(tracking_uri: str, model_uri: str):
    """The registry entry behind 'models:/name/version' or 'models:/name@alias'."""
    tracking_uri = absolute_tracking_uri(tracking_uri)
    follow_project_move(tracking_uri)
    client = MlflowClient(tracking_uri)
    name_and_ref = model_uri.removeprefix("models:/")
    try:
        if "@" in name_and_ref:
            name, alias = name_and_ref.split("@", 1)
            return with_retry(lambda: client.get_model_version_by_alias(name, alias))
        name, _, version = name_and_ref.partition("/")
        return with_retry(lambda: client.get_model_version(name, version))
    except MlflowException as err:
        raise ModelRegistryError(f"no registered model {model_uri!r} in {tracking_uri}: {err.message}") from None


def load_registered_model(tracking_uri: str, model_uri: str) -> torch.nn.Module:
    """The torch module behind a 'models:/name/version' or 'models:/name@alias' URI, built by
    galpipe's own code from the version's safetensors weights and architecture name: nothing in
    the model's folder is executed or unpickled (a model logged as a pickle is refused)."""
    tracking_uri = absolute_tracking_uri(tracking_uri)
    follow_project_move(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder))
        except Exception as err:  # MLflow raises several types for a missing or broken model
            raise ModelRegistryError(f"cannot load registered model {model_uri!r} from {tracking_uri}: {err}") from None
        weights = local / "artifacts" / WEIGHTS_FILE
        if not weights.is_file():
            raise ModelRegistryError(f"{model_uri}: no {WEIGHTS_FILE} in the model (logged as a pickle by an older "
                                     "galpipe?); galpipe does not unpickle models: train it again")
        try:
            return load_model_files(weights, local / "artifacts" / ARCHITECTURE_FILE)
        except ModelFileError as err:
            raise ModelRegistryError(f"{model_uri}: {err}") from None
