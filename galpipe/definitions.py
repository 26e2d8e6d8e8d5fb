"""The one place that builds galpipe's Dagster Definitions (loaded by workspace.yaml) from a project:
a shipped project's name or a project file (galpipe.project), from the GALPIPE_PROJECT environment
variable (default `small`). Its tasks and label budgets are the partitions; its surveys and
settings are the resources, each of which can also be changed in the launchpad."""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from galpipe.defs.assets import ASSETS
from galpipe.defs.checks import CHECKS, MODEL_CHECKS
from galpipe.defs.io_managers import ParquetIOManager
from galpipe.defs.jobs import JOBS
from galpipe.defs.model_assets import model_assets
from galpipe.defs.prediction_assets import target_morphology
from galpipe.defs.reevaluation import champion_evaluation, champion_has_not_regressed, daily_reevaluation
from galpipe.defs.resources import GalpipeSettings, MlflowTracking
from galpipe.defs.sensors import new_target_labels
from galpipe.project import current_project, load_project, project_reference

ALL_CHECKS = [*CHECKS, *MODEL_CHECKS, champion_has_not_regressed]


def build_resources(project: str | None = None, data_dir: str = "data", source=None, target=None,
                    mlflow: MlflowTracking | None = None, **settings_fields) -> dict:
    """Resources for a run of `project` (default: $GALPIPE_PROJECT); `source`/`target` replace its surveys."""
    project = project or current_project()
    loaded = load_project(project)
    project = project_reference(project)  # a file by its absolute path, wherever the code server runs
    settings_fields = {"tasks": list(loaded.tasks), "experiment": loaded.experiment, **settings_fields}
    settings = GalpipeSettings(project=str(project), data_dir=data_dir, **settings_fields)
    return {
        "settings": settings,
        "source_survey": source or loaded.source,
        "target_survey": target or loaded.target,
        "io_manager": ParquetIOManager(settings=settings),
        "mlflow": mlflow or MlflowTracking(),
    }


def all_assets(project: str | None = None) -> list:
    """Every asset, partitioned by the project's tasks and label budgets."""
    loaded = load_project(project or current_project())
    return [*ASSETS, *model_assets(loaded.tasks, loaded.profile.label_budgets), champion_evaluation, target_morphology]


def build_definitions(project: str | None = None, **resource_fields) -> Definitions:
    # Each run's steps in the run's own process: the default (a process per step) would import galpipe,
    # torch and MLflow again for each of the data job's dozen steps; parallelism is across runs (run_queue).
    return Definitions(assets=all_assets(project), asset_checks=ALL_CHECKS, jobs=JOBS, schedules=[daily_reevaluation],
                       sensors=[new_target_labels], resources=build_resources(project, **resource_fields),
                       executor=in_process_executor)


defs = build_definitions()
