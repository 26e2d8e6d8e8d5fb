"""Configuration as Dagster resources: the run's profile and folders, and where each survey's
data come from. They show up, typed, in the launchpad of the UI."""

import os
from pathlib import Path
from typing import Literal

import pandas as pd
from dagster import ConfigurableResource

from galpipe.catalogs import read_table, validate_catalog
from galpipe.instruments import get_instrument
from galpipe.label_catalogs import labels_from_catalog
from galpipe.profiles import DEFAULT_PROFILE, Profile, get_profile
from galpipe.simulation.population import SDSS_SPECTROSCOPIC_LIMIT_R_MAG, SKY_FAINT_LIMIT_R_MAG
from galpipe.sources.folder import folder_manifest, load_folder_catalog
from galpipe.sources.legacy_survey import LAYER_BANDS, LegacySurveyClient, download_cutouts
from galpipe.sources.simulated import render_cutouts, simulated_catalog


class GalpipeSettings(ConfigurableResource):
    """The profile to build and where its files go (`data_dir/profile/...`)."""

    profile: str = DEFAULT_PROFILE
    data_dir: str = "data"
    tasks: list[str] = ["featured", "edge_on", "bar"]
    n_workers: int = 0  # processes for rendering; 0 = one per core
    min_match_rate: float = 0.5  # asset check: matched fraction of the target catalogue
    regression_tolerance: float = 0.02  # asset check: allowed drop of a champion's test metric

    @property
    def labels_dir(self) -> Path:
        """Where new target labels are dropped (CSV or Parquet; see galpipe.labels)."""
        return self.run_dir / "labels"

    def get_profile(self) -> Profile:
        return get_profile(self.profile)

    @property
    def run_dir(self) -> Path:
        return Path(self.data_dir) / self.profile

    def workers(self) -> int:
        return self.n_workers or os.cpu_count() or 1


class SurveySource(ConfigurableResource):
    """Where one survey's catalogue and cutouts come from.

    kind = "simulated": the embedded default, `instrument` observing the profile's simulated sky.
    kind = "folder": a catalogue file plus cutouts in `folder` (columns named by the *_column
        fields; `label_columns` maps task -> column for a folder that carries its own labels).
    kind = "legacy_survey": positions from `catalog_path`, FITS cutouts fetched from the Legacy
        Survey viewer (`layer` sdss or des-dr1) at `instrument`'s pixel scale.
    """

    kind: Literal["simulated", "folder", "legacy_survey"] = "simulated"
    instrument: str = "sdss"
    # simulated
    footprint: Literal["full", "target"] = "full"
    r_mag_limit: float = SDSS_SPECTROSCOPIC_LIMIT_R_MAG
    volunteer_labels: bool = True
    # folder
    folder: str = ""
    catalog_file: str = "catalog.csv"
    id_column: str = "object_id"
    ra_column: str = "ra_deg"
    dec_column: str = "dec_deg"
    image_column: str = "image_path"
    label_columns: dict[str, str] = {}
    # folder or legacy_survey: labels from a published catalogue's columns ("gz2" for Galaxy Zoo 2
    # debiased vote fractions, "ds18" for Dominguez Sanchez et al. 2018 probabilities).
    label_scheme: Literal["", "gz2", "ds18"] = ""
    label_threshold: float = 0.5
    # legacy_survey
    catalog_path: str = ""
    base_url: str = "https://www.legacysurvey.org/viewer"
    layer: str = "sdss"
    timeout_s: float = 30.0

    @property
    def bands(self) -> str | None:
        """The bands every cutout must have (None: a colour image or unknown)."""
        if self.kind == "simulated":
            return get_instrument(self.instrument).band_names
        if self.kind == "legacy_survey":
            return LAYER_BANDS.get(self.layer)
        return None

    def expected_shape(self, profile: Profile) -> tuple[int, int] | None:
        if self.kind == "folder":
            return None
        size = get_instrument(self.instrument).cutout_size_pixels(profile.cutout_field_arcsec)
        return (size, size)

    def owns_files(self) -> bool:
        """Files galpipe made (and may quarantine by moving), not the user's own."""
        return self.kind != "folder"

    def load_catalog(self, profile: Profile) -> pd.DataFrame:
        if self.kind == "simulated":
            return simulated_catalog(self.instrument, profile.sky, self.footprint, self.r_mag_limit,
                                     self.volunteer_labels)
        if self.kind == "folder":
            has_positions = bool(self.ra_column and self.dec_column)
            catalog = load_folder_catalog(self.folder, self.catalog_file, self.id_column, self.image_column,
                                          self.ra_column if has_positions else None,
                                          self.dec_column if has_positions else None, self.label_columns)
            where = str(Path(self.folder) / self.catalog_file)
        else:
            catalog = validate_catalog(read_table(self.catalog_path), self.catalog_path,
                                       label_columns=tuple(self.label_columns))
            where = self.catalog_path
        if self.label_scheme:
            catalog, _ = labels_from_catalog(catalog, self.label_scheme, self.label_threshold, where)
        return catalog

    def build_cutouts(self, catalog: pd.DataFrame, profile: Profile, out_dir: Path, n_workers: int,
                      progress=None) -> pd.DataFrame:
        """The cutout manifest: object_id, path, status ('ok' or 'failed'), reason."""
        if self.kind == "simulated":
            return render_cutouts(catalog, self.instrument, profile.cutout_field_arcsec, out_dir,
                                  n_workers, progress)
        if self.kind == "folder":
            return folder_manifest(catalog)
        client = LegacySurveyClient(base_url=self.base_url, cache_dir=out_dir, timeout_s=self.timeout_s)
        instrument = get_instrument(self.instrument)
        return download_cutouts(catalog, client, self.layer, instrument.pixel_scale_arcsec,
                                instrument.cutout_size_pixels(profile.cutout_field_arcsec))


def simulated_source() -> SurveySource:
    """SDSS DR7 over the whole simulated sky, r < 17.77, with volunteer labels."""
    return SurveySource(kind="simulated", instrument="sdss", footprint="full",
                        r_mag_limit=SDSS_SPECTROSCOPIC_LIMIT_R_MAG, volunteer_labels=True)


def simulated_target() -> SurveySource:
    """DES DR1 over part of the simulated sky, deeper (r < 18), without labels of its own."""
    return SurveySource(kind="simulated", instrument="des", footprint="target",
                        r_mag_limit=SKY_FAINT_LIMIT_R_MAG, volunteer_labels=False)


class MlflowTracking(ConfigurableResource):
    """Our own small MLflow resource (dagster-mlflow pins pandas < 3 and is unmaintained)."""

    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: str = "mlruns/artifacts"
    experiment: str = "galpipe"

    def tracker(self):
        from galpipe.tracking import Tracker

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return Tracker(self.tracking_uri, self.artifact_root, self.experiment)
