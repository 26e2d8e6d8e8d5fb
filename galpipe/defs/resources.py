"""Configuration as Dagster resources: the run's project file and folders, and the MLflow store.
They show up, typed, in the launchpad of the UI; where each survey's data come from is in
galpipe.defs.surveys (the `source_survey` and `target_survey` resources, filled from the project)."""

import os
from pathlib import Path

from dagster import ConfigurableResource

from galpipe.profiles import Profile
from galpipe.project import DEFAULT_PROJECT, Project, load_project
from galpipe.tracking import default_tracking_uri, sqlite_path


class GalpipeSettings(ConfigurableResource):
    """The project to build (a shipped project's name, e.g. `small`, or a project file) and where its
    files go (`data_dir/<project name>/...`). galpipe.definitions fills `tasks` and `experiment` from
    the project; the launchpad shows them. The surveys and partitions come from the same project
    when the definitions load: to work on another project, start `galpipe ui --config FILE` (or set
    GALPIPE_PROJECT), rather than changing `project` in the launchpad."""

    project: str = DEFAULT_PROJECT
    data_dir: str = "data"
    tasks: list[str] = []
    n_workers: int = 0  # processes for rendering; 0 = one per core
    min_match_rate: float = 0.5  # asset check: matched fraction of the target catalogue
    max_failed_input_fraction: float = 0.05  # asset check: share of cutouts without a model input
    # The MLflow experiment of this run set, and the prefix of its registered models; "" means the
    # project's (galpipe-<name> by default), so that two experiments never share a champion.
    experiment: str = ""
    regression_tolerance: float = 0.02  # asset check: allowed drop of a champion's test metric

    @property
    def labels_dir(self) -> Path:
        """Where new target labels are dropped (CSV or Parquet; see galpipe.labels)."""
        return self.run_dir / "labels"

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.get_project().experiment

    def get_project(self) -> Project:
        return load_project(self.project)

    def get_profile(self) -> Profile:
        return self.get_project().profile

    @property
    def run_dir(self) -> Path:
        return Path(self.data_dir) / self.get_project().name

    def workers(self) -> int:
        return self.n_workers or os.cpu_count() or 1


class MlflowTracking(ConfigurableResource):
    """Our own small MLflow resource (dagster-mlflow pins pandas < 3 and is unmaintained). The store
    is the project's SQLite file, or MLflow's own MLFLOW_TRACKING_URI where that is set (a tracking
    server on a cluster: README, "Running on a cluster")."""

    tracking_uri: str = default_tracking_uri()
    artifact_root: str = "mlruns/artifacts"

    def tracker(self, settings: GalpipeSettings):
        """The tracker of the run's experiment (settings.experiment_name), its runs tagged with the project."""
        from galpipe.tracking import Tracker

        if (store := sqlite_path(self.tracking_uri)) is not None:
            store.parent.mkdir(parents=True, exist_ok=True)
        return Tracker(self.tracking_uri, self.artifact_root, settings.experiment_name, settings.get_project().name)
