"""Shared fixtures: a tiny simulated sky, a tiny project after `galpipe run`, and the path to the
real DECaLS sample."""

import os
from pathlib import Path

import pytest

from galpipe.cli import main
from galpipe.profiles import get_profile
from galpipe.sources.simulated import simulated_catalog

DECALS_FOLDER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gz_decals_rings"


@pytest.fixture(scope="session")
def tiny_profile():
    return get_profile("tiny")


@pytest.fixture(scope="session")
def sdss_catalog(tiny_profile):
    return simulated_catalog("sdss", tiny_profile.sky, "full", 17.77, volunteer_labels=True)


@pytest.fixture(scope="session")
def decals_folder():
    if not (DECALS_FOLDER / "catalog.csv").is_file():
        pytest.fail(f"the real DECaLS sample is missing: expected {DECALS_FOLDER}/catalog.csv")
    return DECALS_FOLDER


def galpipe_in(root: Path, argv: list[str]) -> int:
    """`galpipe <argv>` run in the project folder `root`, with the project's own Dagster instance."""
    cwd, home = os.getcwd(), os.environ.get("DAGSTER_HOME")
    os.chdir(root)
    os.environ["DAGSTER_HOME"] = str(root / ".dagster_home")
    try:
        return main(argv)
    finally:
        os.chdir(cwd)
        os.environ.pop("DAGSTER_HOME") if home is None else os.environ.__setitem__("DAGSTER_HOME", home)


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory):
    """A fresh project folder after `galpipe run --profile tiny` (data/, mlruns/, .dagster_home/)."""
    root = tmp_path_factory.mktemp("project")
    return root, galpipe_in(root, ["run", "--profile", "tiny"])
