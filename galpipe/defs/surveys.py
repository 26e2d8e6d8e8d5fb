"""Where a survey's catalogue and cutouts come from: one resource class per kind, registered in
`SOURCE_KINDS`, each answering the same questions (its catalogue, its cutouts, the bands and
shape every cutout must have, whether galpipe owns the files). The `source_survey` and
`target_survey` resources take any of them.

- `SimulatedSurvey`: the embedded default, `instrument` observing the profile's simulated sky.
- `FolderSurvey`: a catalogue file plus FITS, JPEG or PNG cutouts in a folder you bring.
- `LegacySurvey`: positions from a catalogue, FITS cutouts fetched from the Legacy Survey
  viewer (`layer` sdss or des-dr1) at `instrument`'s pixel scale.
"""

import dataclasses
from pathlib import Path
from typing import ClassVar, Literal

import pandas as pd
from dagster import ConfigurableResource

from galpipe.catalogs import CatalogError, read_table, renamed, validate_catalog
from galpipe.framing import FRAMINGS, GZ2_FIELD_PER_PETRO_R90, Framing, FramingError
from galpipe.instruments import get_instrument
from galpipe.label_catalogs import labels_from_catalog
from galpipe.preprocessing import build_model_inputs
from galpipe.profiles import Profile
from galpipe.registry import Registry
from galpipe.simulation.population import SDSS_SPECTROSCOPIC_LIMIT_R_MAG, SKY_FAINT_LIMIT_R_MAG
from galpipe.sources.folder import folder_manifest, load_folder_catalog
from galpipe.sources.legacy_survey import LAYER_BANDS, LegacySurveyClient, download_cutouts
from galpipe.sources.simulated import render_cutouts, simulated_catalog


class SurveySource(ConfigurableResource):
    """What every kind of survey source answers. `instrument` gives, where galpipe makes or fetches
    the cutouts, their pixel scale; `survey_name` (default: the instrument's) names the survey in
    registered models and galleries. The framing fields say how much sky each model input shows
    (galpipe.framing): `framing` fixed (`field_arcsec`), per_galaxy (`field_per_size` times the
    catalogue's `size_column`, in arcsec) or whole_image (the central `central_fraction` of each
    image's side; 1: all of it)."""

    kind: ClassVar[str] = ""
    framings: ClassVar[tuple[str, ...]] = FRAMINGS  # those this kind can make
    instrument: str = "sdss"
    survey_name: str = ""
    framing: str = "fixed"
    field_arcsec: float = 40.0
    size_column: str = ""
    field_per_size: float = GZ2_FIELD_PER_PETRO_R90
    central_fraction: float = 1.0

    @property
    def name(self) -> str:
        return self.survey_name or self.instrument

    @property
    def bands(self) -> str | None:
        """The bands every cutout must have (None: a colour image or unknown)."""
        return None

    def get_framing(self) -> Framing:
        if self.framing not in self.framings:
            raise FramingError(f"framing {self.framing!r}: a {self.kind} survey can be framed "
                               f"{' or '.join(self.framings)}")
        return Framing(self.framing, self.field_arcsec, self.size_column, self.field_per_size, self.central_fraction)

    def model_frame(self, catalog: pd.DataFrame) -> tuple:
        """What a picture needs to outline the part of each image that becomes model input: the
        field (one for every galaxy, or by object_id when framed per galaxy) and the pixel scale
        of images without a PIXSCALE header (galpipe.gallery)."""
        framing = self.get_framing()
        fields = framing.fields_arcsec(catalog) if framing.kind == "per_galaxy" else framing.model_field_arcsec
        return fields, self.image_pixel_scale_arcsec()

    def expected_shape(self) -> tuple[int, int] | None:
        """The (height, width) in pixels every cutout must have (None: any)."""
        if self.framing != "fixed":
            return None
        size = get_instrument(self.instrument).cutout_size_pixels(self.field_arcsec)
        return (size, size)

    def owns_files(self) -> bool:
        """Files galpipe made (and may quarantine by moving), not the user's own."""
        return True

    def image_pixel_scale_arcsec(self) -> float | None:
        """arcsec/pixel of cutouts without a PIXSCALE header (JPEG/PNG); FITS cutouts carry theirs."""
        return None

    def load_catalog(self, profile: Profile) -> pd.DataFrame:
        raise NotImplementedError

    def realism_params(self, profile: Profile) -> dict:
        """How real the images are made, as MLflow params of the models trained on them (issue 14's
        realism effects, compared across projects in the MLflow UI); none for real surveys."""
        return {}

    def build_cutouts(self, catalog: pd.DataFrame, profile: Profile, out_dir: Path, n_workers: int,
                      progress=None) -> pd.DataFrame:
        """The cutout manifest: object_id, path, status ('ok' or 'failed'), reason."""
        raise NotImplementedError

    def build_model_inputs(self, catalog: pd.DataFrame, cutouts: pd.DataFrame, out_path: Path, profile: Profile,
                           where: str = "catalogue") -> pd.DataFrame:
        """`cutouts`' model inputs, stacked in `out_path`, as a project makes them: over this survey's
        framing of `catalog`, in the profile's input mode and colour rendering, of the survey's own
        bands where it has three or more (the three bluest), else g, r, i. Returns the index
        (galpipe.preprocessing.build_model_inputs)."""
        return build_model_inputs(cutouts, out_path, self.get_framing().fields_arcsec(catalog, where),
                                  profile.input_mode, self.image_pixel_scale_arcsec(), (self.bands or "gri")[:3],
                                  profile.colour_rendering)


class _PublishedLabels(SurveySource):
    """A catalogue you bring, its columns named by the *_column fields, whose labels may be 0/1
    columns (`label_columns`: task -> column) or a published catalogue's columns (`label_scheme`
    "gz2" for Galaxy Zoo 2 debiased vote fractions, "ds18" for Dominguez Sanchez et al. 2018
    probabilities)."""

    id_column: str = "object_id"
    ra_column: str = "ra_deg"
    dec_column: str = "dec_deg"
    label_columns: dict[str, str] = {}
    label_scheme: Literal["", "gz2", "ds18"] = ""
    label_threshold: float = 0.5

    def _with_scheme_labels(self, catalog: pd.DataFrame, where: str) -> pd.DataFrame:
        if self.label_scheme:
            catalog, _ = labels_from_catalog(catalog, self.label_scheme, self.label_threshold, where)
        return catalog


class SimulatedSurvey(SurveySource):
    kind: ClassVar[str] = "simulated"
    framings: ClassVar[tuple[str, ...]] = ("fixed", "per_galaxy")  # rendered over each galaxy's field
    footprint: Literal["full", "target"] = "full"
    r_mag_limit: float = SDSS_SPECTROSCOPIC_LIMIT_R_MAG
    volunteer_labels: bool = True
    # The spread (lognormal sigma) of this survey's seeing from galaxy to galaxy; 0: every galaxy
    # at the instrument's median PSF. ~0.15 for SDSS imaging runs (issue 14's realism effects).
    seeing_spread: float = 0.0
    # The share of galaxies without a feature that volunteers label as having it (issue 14's label
    # noise with false positives; 0: only missed features, as before).
    label_false_positive_fraction: float = 0.0
    # The sources' own Poisson noise on top of the sky's (issue 14), where the survey's gain is known.
    source_poisson_noise: bool = False

    @property
    def bands(self) -> str | None:
        return get_instrument(self.instrument).band_names

    def load_catalog(self, profile: Profile) -> pd.DataFrame:
        catalog = simulated_catalog(self.instrument, profile.sky, self.footprint, self.r_mag_limit,
                                    self.volunteer_labels, self.label_false_positive_fraction)
        if catalog.empty:  # later steps would fail on the missing columns, with no word of why
            raise CatalogError(f"simulated {self.name}: no galaxy of the sky ({profile.sky.n_galaxies} galaxies) is "
                               f"brighter than r_mag_limit {self.r_mag_limit:g} in footprint {self.footprint!r}")
        return catalog

    def realism_params(self, profile: Profile) -> dict:
        sky = {f"sky_{key}": value for key, value in dataclasses.asdict(profile.sky).items()
               if key not in ("n_galaxies", "target_footprint_fraction", "close_pair_fraction")}
        return {**sky, "seeing_spread": self.seeing_spread, "source_poisson_noise": self.source_poisson_noise,
                "label_false_positive_fraction": self.label_false_positive_fraction}

    def build_cutouts(self, catalog, profile, out_dir, n_workers, progress=None):
        fields = self.get_framing().fields_arcsec(catalog, f"{self.name} catalogue")
        return render_cutouts(catalog, self.instrument, fields, out_dir, n_workers, progress,
                              neighbours=profile.sky.neighbours, seeing_spread=self.seeing_spread,
                              source_noise=self.source_poisson_noise)


class FolderSurvey(_PublishedLabels):
    """Columns are named by the *_column fields; without ra/dec columns (empty names) the folder
    needs labels of its own, as there is nothing to cross-match."""

    kind: ClassVar[str] = "folder"
    # No per_galaxy: a model trained on cuts of your images could not be given the same cuts of new ones.
    framings: ClassVar[tuple[str, ...]] = ("fixed", "whole_image")
    instrument: str = ""  # galpipe makes no cutouts here; survey_name (or the folder's name) names it
    folder: str = ""
    catalog_file: str = "catalog.csv"
    image_column: str = "image_path"
    # arcsec/pixel of the folder's JPEG/PNG cutouts (FITS cutouts carry PIXSCALE); 0: unknown
    pixel_scale_arcsec: float = 0.0

    @property
    def name(self) -> str:
        return self.survey_name or self.instrument or Path(self.folder).name or "folder"

    def expected_shape(self) -> tuple[int, int] | None:
        return None

    def image_pixel_scale_arcsec(self) -> float | None:
        return self.pixel_scale_arcsec or None

    def owns_files(self) -> bool:
        return False

    def load_catalog(self, profile: Profile) -> pd.DataFrame:
        has_positions = bool(self.ra_column and self.dec_column)
        catalog = load_folder_catalog(self.folder, self.catalog_file, self.id_column, self.image_column,
                                      self.ra_column if has_positions else None,
                                      self.dec_column if has_positions else None, self.label_columns)
        return self._with_scheme_labels(catalog, str(Path(self.folder) / self.catalog_file))

    def build_cutouts(self, catalog, profile, out_dir, n_workers, progress=None):
        return folder_manifest(catalog)


class LegacySurvey(_PublishedLabels):
    kind: ClassVar[str] = "legacy_survey"
    framings: ClassVar[tuple[str, ...]] = ("fixed",)  # one cutout size per request
    catalog_path: str = ""
    base_url: str = "https://www.legacysurvey.org/viewer"
    layer: str = "sdss"
    timeout_s: float = 30.0

    @property
    def bands(self) -> str | None:
        return LAYER_BANDS.get(self.layer)

    def load_catalog(self, profile: Profile) -> pd.DataFrame:
        renames = {self.id_column: "object_id", self.ra_column: "ra_deg", self.dec_column: "dec_deg",
                   **{column: task for task, column in self.label_columns.items()}}
        raw = read_table(self.catalog_path, string_columns=(self.id_column,))
        catalog = validate_catalog(renamed(raw, renames, self.catalog_path), self.catalog_path,
                                   label_columns=tuple(self.label_columns))
        return self._with_scheme_labels(catalog, self.catalog_path)

    def image_pixel_scale_arcsec(self) -> float | None:
        """The scale every cutout was asked for (`pixscale`): the viewer's FITS carry a WCS but no
        PIXSCALE keyword."""
        return get_instrument(self.instrument).pixel_scale_arcsec

    def build_cutouts(self, catalog, profile, out_dir, n_workers, progress=None):
        client = LegacySurveyClient(base_url=self.base_url, cache_dir=out_dir, timeout_s=self.timeout_s)
        instrument = get_instrument(self.instrument)
        return download_cutouts(catalog, client, self.layer, instrument.pixel_scale_arcsec,
                                instrument.cutout_size_pixels(self.get_framing().field_arcsec))


SOURCE_KINDS: Registry[type[SurveySource]] = Registry("survey source kind")
for _kind in (SimulatedSurvey, FolderSurvey, LegacySurvey):
    SOURCE_KINDS.register(_kind.kind, _kind)


def simulated_source() -> SimulatedSurvey:
    """SDSS DR7 over the whole simulated sky, r < 17.77, with volunteer labels."""
    return SimulatedSurvey(instrument="sdss", footprint="full", r_mag_limit=SDSS_SPECTROSCOPIC_LIMIT_R_MAG,
                           volunteer_labels=True)


def simulated_target() -> SimulatedSurvey:
    """DES DR1 over part of the simulated sky, deeper (r < 18), without labels of its own."""
    return SimulatedSurvey(instrument="des", footprint="target", r_mag_limit=SKY_FAINT_LIMIT_R_MAG,
                           volunteer_labels=False)
