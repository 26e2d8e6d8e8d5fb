"""MLflow tracking and registry for galpipe's training runs: a run that fails is marked
FAILED (never left RUNNING), models are logged with signature and input example and
registered, the champion is an alias. Writes to the SQLite store are retried when it is locked.
"""

from __future__ import annotations

import contextlib
import random
import time
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

# Logged with each model so MLflow does not spend seconds inferring requirements per run.
MODEL_PIP_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]


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


class Tracker:
    def __init__(self, tracking_uri: str, artifact_root: str, experiment: str):
        self.tracking_uri = tracking_uri
        mlflow.set_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri)
        found = with_retry(lambda: self.client.get_experiment_by_name(experiment))
        if found is None:
            Path(artifact_root).mkdir(parents=True, exist_ok=True)
            artifact_location = Path(artifact_root).resolve().as_uri()
            try:
                self.experiment_id = with_retry(lambda: self.client.create_experiment(experiment, artifact_location))
            except MlflowException:  # created meanwhile by a parallel run
                self.experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        else:
            self.experiment_id = found.experiment_id

    @contextlib.contextmanager
    def run(self, name: str, tags: dict, params: dict):
        """An MLflow run that ends FINISHED, or FAILED (with the error as a tag) if the body raises."""
        run = with_retry(lambda: self.client.create_run(self.experiment_id, run_name=name,
                                                        tags={k: str(v) for k, v in tags.items()}))
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

    def log_metrics(self, run_id: str, metrics: dict, step: int = 0) -> None:
        timestamp = int(time.time() * 1000)
        entries = [mlflow.entities.Metric(k, float(v), timestamp, step) for k, v in metrics.items()
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
                               registered_name: str, tags: dict | None = None) -> tuple[str, str]:
        """Log the model (pickled module, so it can be trained further) and register it; `tags` go
        on the model version (galpipe puts there what a user of the model needs: task, input mode,
        field). Returns (model URI 'models:/name/version', version)."""
        model = model.cpu().eval()
        with torch.no_grad():
            output = torch.sigmoid(model(torch.from_numpy(input_example))).numpy()
        signature = infer_signature(input_example, output)
        with mlflow.start_run(run_id=run_id):
            info = with_retry(lambda: mlflow.pytorch.log_model(
                model, name="model", signature=signature, input_example=input_example,
                serialization_format="pickle", pip_requirements=MODEL_PIP_REQUIREMENTS))
        tags = {k: str(v) for k, v in (tags or {}).items()}
        version = with_retry(lambda: mlflow.register_model(info.model_uri, registered_name, tags=tags)).version
        return f"models:/{registered_name}/{version}", str(version)

    def set_alias(self, registered_name: str, alias: str, version: str) -> None:
        with_retry(lambda: self.client.set_registered_model_alias(registered_name, alias, version))


def model_version(tracking_uri: str, model_uri: str):
    """The registry entry behind 'models:/name/version' or 'models:/name@alias'."""
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
    """The torch module behind a 'models:/name/version' or 'models:/name@alias' URI."""
    mlflow.set_tracking_uri(tracking_uri)
    try:
        return mlflow.pytorch.load_model(model_uri, map_location="cpu")
    except Exception as err:  # MLflow raises several types for a missing or broken model
        raise ModelRegistryError(f"cannot load registered model {model_uri!r} from {tracking_uri}: {err}") from None
