"""A project file (YAML) says everything a run needs: the experiment's name, the source and target
surveys (any kind in galpipe.defs.surveys.SOURCE_KINDS, with their columns, bands and framing), the
tasks, and the experiment's settings (every field of galpipe.profiles.Profile, e.g. label budgets,
seeds, strategies). The built-in profiles are the shipped project files in galpipe/projects/.

`load_project` validates the file before any work: an error names the file and the key. Relative
paths in it (`folder`, `catalog_path`) are taken from the file's own folder, wherever galpipe runs.
A file may `extends:` another project (a shipped name or a file) and set only what differs: its
mappings (`sky`, `source`, `target`) are merged key by key; name, experiment and description are
never inherited."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pydantic
import yaml

from galpipe.catalogs import CatalogError, read_table
from galpipe.defs.surveys import SOURCE_KINDS, FolderSurvey, LegacySurvey, SimulatedSurvey, SurveySource
from galpipe.experiment.selections import RANDOM, SELECTIONS
from galpipe.experiment.strategies import STRATEGIES
from galpipe.framing import FramingError
from galpipe.hardware import PRECISIONS
from galpipe.instruments import get_instrument
from galpipe.label_catalogs import SCHEMES
from galpipe.models import ARCHITECTURES
from galpipe.preprocessing import COLOUR_RENDERINGS
from galpipe.profiles import ALL_LABEL_BUDGETS, INPUT_MODES, Profile
from galpipe.simulation.population import SkyConfig
from galpipe.tasks import simulated_tasks
from galpipe.training import AUGMENTATIONS, SCHEDULES

SHIPPED_DIR = Path(__file__).parent / "projects"
DEFAULT_PROJECT = "small"
PROJECT_VARIABLE = "GALPIPE_PROJECT"  # the project Dagster's definitions are built from
PROFILE_KEYS = {f.name for f in dataclasses.fields(Profile)} - {"name"}
TOP_KEYS = {"name", "experiment", "description", "extends", "tasks", "source", "target"} | PROFILE_KEYS
SKY_KEYS = {f.name for f in dataclasses.fields(SkyConfig)}
PATH_KEYS = ("folder", "catalog_path")  # relative to the project file's folder
NOT_EMPTY = ("label_budgets", "seeds", "strategies", "selections")  # list keys a run cannot do without
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a folder name under data/
SIMULATED_SIZE_COLUMNS = ("half_light_radius_arcsec", "petro_r90_arcsec")  # in every simulated catalogue


class ProjectError(ValueError):
    """A project file that cannot be run: the message names the file and the key."""


@dataclass(frozen=True)
class Project:
    name: str  # its runs' folder, data/<name>/
    experiment: str  # the MLflow experiment, and the prefix of its registered models
    tasks: tuple[str, ...]
    profile: Profile
    source: SurveySource
    target: SurveySource
    path: Path


def shipped_projects() -> list[str]:
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def current_project() -> str:
    return os.environ.get(PROJECT_VARIABLE, DEFAULT_PROJECT)


def project_reference(project: str | Path) -> str:
    """How to name `project` to another process: a shipped project by name, a file by its absolute path."""
    path = project_path(project)
    return path.stem if path.parent == SHIPPED_DIR else str(path)


def project_path(project: str | Path) -> Path:
    """A shipped project's file (by name, e.g. `small`), or the file `project` names."""
    if (SHIPPED_DIR / f"{project}.yaml").is_file() and not Path(project).suffix:
        return SHIPPED_DIR / f"{project}.yaml"
    path = Path(project)
    if not path.is_file():
        raise ProjectError(f"{project}: no such project file, nor a shipped project ({', '.join(shipped_projects())})")
    return path.resolve()


def load_project(project: str | Path = DEFAULT_PROJECT) -> Project:
    path = project_path(project)
    return _load(path, _times(path))


def _times(path: Path, seen: tuple[Path, ...] = ()) -> tuple[int, ...]:
    """The modification times of the file and of those it extends, so that editing any is seen."""
    times = (path.stat().st_mtime_ns,)
    try:
        parent = yaml.safe_load(path.read_text()).get("extends")
        base = _extended_path(path, parent) if parent else None
    except (yaml.YAMLError, AttributeError, ProjectError):
        return times  # _read says what is wrong
    return times if base is None or base in seen else times + _times(base, seen + (path,))


def _extended_path(path: Path, parent) -> Path:
    """The file `extends: parent` names: a shipped project, or a file relative to `path`'s folder."""
    shipped = isinstance(parent, str) and (SHIPPED_DIR / f"{parent}.yaml").is_file() and not Path(parent).suffix
    base = SHIPPED_DIR / f"{parent}.yaml" if shipped else path.parent / str(parent)
    if not base.is_file():
        raise ProjectError(f"{path}: extends: {parent!r}: no such project file, nor a shipped project")
    return base.resolve()


@functools.lru_cache(maxsize=16)
def _load(path: Path, mtimes_ns: tuple[int, ...]) -> Project:  # the files' times in the key: an edit is read again
    raw = _read(path)
    for key in ("tasks", "source", "target"):
        if key not in raw:
            raise ProjectError(f"{path}: missing key {key!r}")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ProjectError(f"{path}: name: {name!r}: letters, digits, '_', '.' and '-' only (it names data/<name>/)")
    profile = _profile(raw, name, path)
    source, target = (_survey(raw[role], role, path) for role in ("source", "target"))
    tasks = _tasks(raw["tasks"], source, target, path)
    if any(isinstance(s, SimulatedSurvey) for s in (source, target)) and profile.sky.n_galaxies < 1:
        raise ProjectError(f"{path}: sky.n_galaxies: a simulated survey needs a sky of at least one galaxy")
    for task in raw.get("class_balanced_tasks", ()):
        if task not in tasks:
            raise ProjectError(f"{path}: class_balanced_tasks: {task!r} is not one of the project's tasks {list(tasks)}")
    return Project(name, str(raw.get("experiment") or f"galpipe-{name}"), tasks, profile, source, target, path)


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The file's keys, over those of the project it extends (if any)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ProjectError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise ProjectError(f"{path}: expected a mapping of keys (name, tasks, source, target, ...)")
    _refuse_unknown(raw, TOP_KEYS, path, "")
    if "extends" not in raw:
        return raw
    parent = raw.pop("extends")
    base_path = _extended_path(path, parent)
    if base_path in seen + (path.resolve(),):
        raise ProjectError(f"{path}: extends: {parent!r} extends this file again (a loop)")
    base = _read(base_path, seen + (path.resolve(),))
    for key in PATH_KEYS:  # the base's relative paths stay relative to the base's folder
        for role in ("source", "target"):
            value = base.get(role, {}).get(key) if isinstance(base.get(role), dict) else None
            if isinstance(value, str) and value:
                base[role][key] = str((base_path.parent / value).resolve())
    merged = {k: v for k, v in base.items() if k not in ("name", "experiment", "description")}
    for key, value in raw.items():
        inherited = merged.get(key)
        merged[key] = {**inherited, **value} if isinstance(inherited, dict) and isinstance(value, dict) else value
    return merged


def _refuse_unknown(mapping: dict, known: set[str], path: Path, where: str) -> None:
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ProjectError(f"{path}: unknown key '{where}{unknown[0]}'; known: {', '.join(sorted(known))}")


def _profile(raw: dict, name: str, path: Path) -> Profile:
    values = {key: raw[key] for key in PROFILE_KEYS if key in raw}
    sky = values.pop("sky", {})
    if not isinstance(sky, dict):
        raise ProjectError(f"{path}: sky: expected a mapping ({', '.join(sorted(SKY_KEYS))})")
    _refuse_unknown(sky, SKY_KEYS, path, "sky.")
    sky = {"n_galaxies": 0, "target_footprint_fraction": 0.5, **sky}
    for key, value in sky.items():
        kind = SkyConfig.__dataclass_fields__[key].type
        if kind in (bool, "bool"):
            if not isinstance(value, bool):
                raise ProjectError(f"{path}: sky.{key}: expected true or false, got {value!r}")
        else:
            _check_number(value, kind, f"sky.{key}", path)
    defaults = {f.name: f.default for f in dataclasses.fields(Profile) if f.default is not dataclasses.MISSING}
    for key, value in values.items():
        if isinstance(defaults.get(key), bool):
            if not isinstance(value, bool):
                raise ProjectError(f"{path}: {key}: expected true or false, got {value!r}")
        elif isinstance(defaults.get(key), tuple):
            values[key] = _list(value, key, path)
        elif isinstance(defaults.get(key), (int, float)):
            _check_number(value, "int" if isinstance(defaults[key], int) else "float", key, path)
    for key, allowed in (("label_budgets", ALL_LABEL_BUDGETS), ("adaptation_budgets", ALL_LABEL_BUDGETS),
                         ("strategies", tuple(STRATEGIES)), ("adaptation_strategies", tuple(STRATEGIES)),
                         ("selection_strategies", tuple(STRATEGIES)), ("selections", tuple(SELECTIONS))):
        bad = [v for v in values.get(key, ()) if v not in allowed]
        if bad:
            raise ProjectError(f"{path}: {key}: unknown {bad[0]!r}; known: {', '.join(allowed)}")
    for key in ("seeds",):
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values.get(key, ())):
            raise ProjectError(f"{path}: {key}: expected whole numbers, got {list(values[key])}")
    if values.get("architecture", "compact") not in ARCHITECTURES:
        raise ProjectError(f"{path}: architecture: unknown {values['architecture']!r}; known: {', '.join(ARCHITECTURES)}")
    if values.get("pretraining_augmentation") in (None, ""):
        values.pop("pretraining_augmentation", None)  # left empty: the same as `augmentation`
    for key, known in (("precision", PRECISIONS), ("schedule", SCHEDULES), ("augmentation", AUGMENTATIONS),
                       ("pretraining_augmentation", AUGMENTATIONS), ("colour_rendering", tuple(COLOUR_RENDERINGS))):
        if key in values and values[key] not in known:
            raise ProjectError(f"{path}: {key}: unknown {values[key]!r}; known: {', '.join(known)}")
    if values.get("input_mode", "bands") not in INPUT_MODES:
        raise ProjectError(f"{path}: input_mode: {values['input_mode']!r}; expected one of {', '.join(INPUT_MODES)}")
    profile = Profile(name=name, sky=SkyConfig(**sky), **values)
    _check_ranges(profile, path)
    _check_strategies(profile, path)
    return profile


def _list(value, key: str, path: Path) -> tuple:
    """A list key's value as a tuple (budgets as text: `full` beside numbers); not empty, no repeats."""
    if not isinstance(value, list):
        raise ProjectError(f"{path}: {key}: expected a list, got {value!r}")
    items = tuple(str(v) if key.endswith("budgets") else v for v in value)
    if len(set(map(str, items))) < len(items):
        raise ProjectError(f"{path}: {key}: {list(value)} names one twice")
    if not items and key in NOT_EMPTY:
        raise ProjectError(f"{path}: {key}: give at least one")
    return items


def _check_number(value, kind, key: str, path: Path) -> None:
    whole = kind in (int, "int")
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        raise ProjectError(f"{path}: {key}: expected {'a whole number' if whole else 'a number'}, got {value!r}")


def _check_ranges(profile: Profile, path: Path) -> None:
    checks = [("test_fraction", 0 < profile.test_fraction < 1, "between 0 and 1"),
              ("match_radius_arcsec", profile.match_radius_arcsec > 0, "positive"),
              ("learning_rate", profile.learning_rate > 0, "positive"),
              ("weight_decay", profile.weight_decay >= 0, "0 or more"),
              ("sky.target_footprint_fraction", 0 < profile.sky.target_footprint_fraction <= 1, "in (0, 1]"),
              ("sky.n_galaxies", profile.sky.n_galaxies >= 0, "0 or more"),
              ("sky.merger_fraction", 0 <= profile.sky.merger_fraction <= 1, "between 0 and 1")]
    checks += [(key, getattr(profile, key) >= 1, "at least 1")
               for key in ("batch_size", "pretrain_max_epochs", "finetune_max_epochs", "patience")]
    checks += [("finetune_min_steps", profile.finetune_min_steps >= 0, "0 or more")]
    for key, ok, expected in checks:
        if not ok:
            raise ProjectError(f"{path}: {key}: must be {expected}")


def _check_strategies(profile: Profile, path: Path) -> None:
    """Every budget's strategies can run: a strategy's teacher is trained beside it (as the protocol
    requires), and the adaptation budgets are among the label budgets when adaptation is asked for."""
    from galpipe.experiment.protocol import selections_for, strategies_for  # torch and MLflow: only here

    if profile.adaptation_strategies or set(profile.selections) - {RANDOM}:
        missing = [b for b in profile.adaptation_budgets if b not in profile.label_budgets]
        if missing:
            raise ProjectError(f"{path}: adaptation_budgets: {missing} not among label_budgets "
                               f"{list(profile.label_budgets)}: nothing would adapt there")
    for budget in profile.label_budgets:
        try:
            for selection in ((None,) if budget == "0" else selections_for(profile, budget)):
                strategies_for(profile, budget, selection)
        except ValueError as err:
            raise ProjectError(f"{path}: strategies: {err}") from None


def _survey(section, role: str, path: Path) -> SurveySource:
    if not isinstance(section, dict) or "kind" not in section:
        raise ProjectError(f"{path}: {role}: expected a mapping with a kind ({', '.join(SOURCE_KINDS)})")
    fields = dict(section)
    kind = fields.pop("kind")
    for key in PATH_KEYS:
        if isinstance(fields.get(key), str) and fields[key]:
            fields[key] = str((path.parent / fields[key]).resolve())
    if kind not in SOURCE_KINDS:
        raise ProjectError(f"{path}: {role}.kind: unknown {kind!r}; known: {', '.join(SOURCE_KINDS)}")
    cls = SOURCE_KINDS.get(kind)
    _refuse_unknown(fields, set(cls.model_fields), path, f"{role}.")
    try:
        survey = cls(**fields)
        framing = survey.get_framing()
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        raise ProjectError(f"{path}: {role}.{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    except FramingError as err:
        raise ProjectError(f"{path}: {role}.framing: {err}") from None
    if not isinstance(survey, FolderSurvey):  # galpipe makes or fetches its cutouts with the instrument's numbers
        try:
            get_instrument(survey.instrument)
        except KeyError as err:
            raise ProjectError(f"{path}: {role}.instrument: {err.args[0]}") from None
    if isinstance(survey, SimulatedSurvey) and survey.seeing_spread < 0:
        raise ProjectError(f"{path}: {role}.seeing_spread: must be 0 or more")
    if isinstance(survey, SimulatedSurvey) and not 0 <= survey.label_false_positive_fraction <= 1:
        raise ProjectError(f"{path}: {role}.label_false_positive_fraction: must be between 0 and 1")
    if isinstance(survey, LegacySurvey) and not (survey.ra_column and survey.dec_column):
        raise ProjectError(f"{path}: {role}.ra_column/dec_column: the Legacy Survey viewer needs positions")
    columns = _catalogue_columns(survey, path, role)
    wanted = {"size_column": framing.size_column} if framing.kind == "per_galaxy" else {}
    if not isinstance(survey, SimulatedSurvey):
        wanted |= {"id_column": survey.id_column, "ra_column": survey.ra_column, "dec_column": survey.dec_column}
    if isinstance(survey, FolderSurvey):
        wanted["image_column"] = survey.image_column
    wanted |= {f"label_columns.{task}": column for task, column in getattr(survey, "label_columns", {}).items()}
    if getattr(survey, "label_scheme", ""):
        wanted |= {f"label_scheme ({task})": column for task, (column, _) in SCHEMES[survey.label_scheme].items()}
    for key, column in wanted.items():
        if column and column not in columns:
            raise ProjectError(f"{path}: {role}.{key}: no column {column!r} in {_catalogue_name(survey)}; "
                               f"it has {', '.join(columns)}")
    return survey


def _catalogue_name(survey: SurveySource) -> str:
    if isinstance(survey, FolderSurvey):
        return str(Path(survey.folder) / survey.catalog_file)
    return getattr(survey, "catalog_path", "the simulated catalogue")


def _catalogue_columns(survey: SurveySource, path: Path, role: str) -> list[str]:
    """The column names of the survey's catalogue, read before any work (the header only, for CSV)."""
    if isinstance(survey, SimulatedSurvey):
        return ["object_id", "ra_deg", "dec_deg", "mag_r", *SIMULATED_SIZE_COLUMNS]
    file = Path(_catalogue_name(survey))
    if not file.is_file():
        key = f"{role}.folder/catalog_file" if isinstance(survey, FolderSurvey) else f"{role}.catalog_path"
        raise ProjectError(f"{path}: {key}: no catalogue file {file}")
    try:
        return list(pd.read_csv(file, nrows=0).columns) if file.suffix.lower() == ".csv" else list(read_table(file).columns)
    except (CatalogError, ValueError, OSError) as err:
        raise ProjectError(f"{path}: {role}: cannot read {file}: {err}") from None


def _labels(survey: SurveySource) -> set[str]:
    """The tasks a survey's catalogue labels."""
    if isinstance(survey, SimulatedSurvey):
        return set(simulated_tasks()) if survey.volunteer_labels else set()
    scheme = set(SCHEMES[survey.label_scheme]) if getattr(survey, "label_scheme", "") else set()
    return set(getattr(survey, "label_columns", {})) | scheme


def _has_positions(survey: SurveySource) -> bool:
    return not isinstance(survey, FolderSurvey) or bool(survey.ra_column and survey.dec_column)


def _tasks(tasks, source: SurveySource, target: SurveySource, path: Path) -> tuple[str, ...]:
    if not isinstance(tasks, list) or not tasks:
        raise ProjectError(f"{path}: tasks: expected a list of task names (0/1 label columns)")
    _list(tasks, "tasks", path)  # no repeats
    for task in map(str, tasks):
        if task not in _labels(source):
            raise ProjectError(f"{path}: tasks: unknown task {task!r}: the source survey ({source.kind}) labels "
                               f"only {sorted(_labels(source)) or 'nothing'}")
        carried = _has_positions(source) and _has_positions(target)
        if task not in _labels(target) and not carried:
            raise ProjectError(f"{path}: tasks: {task!r}: the target survey has no label column for it, and without "
                               "positions in both surveys no label can be carried by cross-matching")
    return tuple(map(str, tasks))

