"""Shared fixtures: a tiny simulated sky, a tiny project after `galpipe run`, and the path to the
real DECaLS sample."""

import os
from pathlib import Path

import pytest
import yaml

from galpipe.cli import main
from galpipe.project import load_project, project_path
from galpipe.sources.simulated import simulated_catalog

DECALS_FOLDER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gz_decals_rings"
GZ2_FOLDER = DECALS_FOLDER.parent / "gz2_spirals"


@pytest.fixture(scope="session")
def tiny_profile():
    return load_project("tiny").profile


@pytest.fixture(scope="session")
def sdss_catalog(tiny_profile):
    return simulated_catalog("sdss", tiny_profile.sky, "full", 17.77, volunteer_labels=True)


@pytest.fixture(scope="session")
def gz2_folder():
    if not (GZ2_FOLDER / "catalog.csv").is_file():
        pytest.fail(f"the real Galaxy Zoo 2 sample is missing: expected {GZ2_FOLDER}/catalog.csv")
    return GZ2_FOLDER


@pytest.fixture(scope="session")
def decals_folder():
    if not (DECALS_FOLDER / "catalog.csv").is_file():
        pytest.fail(f"the real DECaLS sample is missing: expected {DECALS_FOLDER}/catalog.csv")
    return DECALS_FOLDER


def galpipe_in(root: Path, argv: list[str]) -> int:
    """`galpipe <argv>` run in the project folder `root`, with the project's own Dagster instance."""
    cwd, saved = os.getcwd(), {name: os.environ.get(name) for name in ("DAGSTER_HOME", "GALPIPE_PROJECT")}
    os.chdir(root)
    os.environ["DAGSTER_HOME"] = str(root / ".dagster_home")
    try:
        return main(argv)
    finally:
        os.chdir(cwd)
        for name, value in saved.items():  # `galpipe run` sets GALPIPE_PROJECT for Dagster's code
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory):
    """A fresh project folder after `galpipe run --profile tiny` (data/, mlruns/, .dagster_home/)."""
    root = tmp_path_factory.mktemp("project")
    return root, galpipe_in(root, ["run", "--profile", "tiny"])


def write_project(folder: Path, base: str = "tiny", **changes) -> str:
    """A project file: the shipped project `base` with `changes` (top-level keys; a survey section
    given as a dict updates the base's, or replaces it when it names another kind), written to
    `folder`; its path."""
    raw = yaml.safe_load(project_path(base).read_text())
    for key, value in changes.items():
        merge = key in ("source", "target") and isinstance(value, dict) and value.get("kind", raw[key]["kind"]) \
            == raw[key]["kind"]
        raw[key] = {**raw[key], **value} if merge else value
    path = Path(folder) / f"project-{len(list(Path(folder).glob('*.yaml')))}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)
