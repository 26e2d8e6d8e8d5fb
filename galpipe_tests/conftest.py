"""Shared fixtures: a tiny simulated sky, and paths to the real DECaLS sample."""

from pathlib import Path

import pytest

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
