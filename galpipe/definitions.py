"""The one place that builds galpipe's Dagster Definitions (loaded by workspace.yaml).

The profile comes from the GALPIPE_PROFILE environment variable (default `small`); each
resource can also be changed in the launchpad."""

from __future__ import annotations

import os

from dagster import Definitions

from galpipe.defs.assets import ASSETS
from galpipe.defs.checks import CHECKS, MODEL_CHECKS
from galpipe.defs.io_managers import ParquetIOManager
from galpipe.defs.jobs import JOBS
from galpipe.defs.model_assets import MODEL_ASSETS
from galpipe.defs.prediction_assets import target_morphology
from galpipe.defs.reevaluation import champion_evaluation, champion_has_not_regressed, daily_reevaluation
from galpipe.defs.resources import GalpipeSettings, MlflowTracking
from galpipe.defs.sensors import new_target_labels
from galpipe.defs.surveys import simulated_source, simulated_target
from galpipe.profiles import DEFAULT_PROFILE


def build_resources(profile: str | None = None, data_dir: str = "data", source=None, target=None,
                    mlflow: MlflowTracking | None = None, **settings_fields) -> dict:
    """Resources for a run: simulated SDSS -> DES unless `source`/`target` say otherwise."""
    settings = GalpipeSettings(profile=profile or os.environ.get("GALPIPE_PROFILE", DEFAULT_PROFILE),
                               data_dir=data_dir, **settings_fields)
    return {
        "settings": settings,
        "source_survey": source or simulated_source(),
        "target_survey": target or simulated_target(),
        "io_manager": ParquetIOManager(settings=settings),
        "mlflow": mlflow or MlflowTracking(),
    }


ALL_ASSETS = [*ASSETS, *MODEL_ASSETS, champion_evaluation, target_morphology]
ALL_CHECKS = [*CHECKS, *MODEL_CHECKS, champion_has_not_regressed]
defs = Definitions(assets=ALL_ASSETS, asset_checks=ALL_CHECKS, jobs=JOBS, schedules=[daily_reevaluation],
                   sensors=[new_target_labels], resources=build_resources())
