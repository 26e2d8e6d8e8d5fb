"""Issue 14's realism effects and unlabelled-target strategies go through the same Dagster assets as
the others and into MLflow like them: a tiny sky with every effect a simulated SDSS -> DES pair
takes, fine-tuned by SimCLR (from a fresh network and from the simulation's) and FixMatch; the
SimCLR networks are pretrained models of their own."""

import dataclasses
import os

import mlflow
import numpy as np
import pandas as pd

from galpipe.cutouts import read_cutouts
from galpipe.experiment.protocol import self_supervised_fingerprint
from galpipe.experiment.strategies import STRATEGIES
from galpipe.training import TrainConfig
from galpipe_tests.conftest import galpipe_in, write_project

UNLABELLED_TARGET_STRATEGIES = ["contrastive", "contrastive_simulation", "fixmatch"]


def test_a_realistic_sky_and_the_unlabelled_target_strategies_run_through_the_assets(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    config = write_project(
        tmp_path, name="tiny_realism", experiment="galpipe-tiny-realism", tasks=["featured"], label_budgets=[0, 25],
        strategies=UNLABELLED_TARGET_STRATEGIES, adaptation_strategies=[], selections=["random"],
        sky={"n_galaxies": 160, "target_footprint_fraction": 0.5, "seed": 0, "neighbours": True,
             "continuous_arms": True, "irregular_arms": True, "dust_lanes": True, "merger_fraction": 0.1},
        source={"seeing_spread": 0.15, "source_poisson_noise": True, "label_false_positive_fraction": 0.1},
        target={"seeing_spread": 0.15, "source_poisson_noise": True})
    assert galpipe_in(root, ["run", "--config", config]) == 0

    # The raw cutouts asset rendered the effects: each galaxy its own seeing, in both surveys.
    for role in ("source", "target"):
        manifest = pd.read_parquet(root / "data" / "tiny_realism" / role / "raw_cutouts.parquet")
        cutouts = read_cutouts([root / path for path in manifest.path[manifest.status == "ok"][:20]])
        fwhm_arcsec = [cutout.header["PSFFWHM1"] for cutout in cutouts]
        assert np.std(fwhm_arcsec) > 0.05 * np.mean(fwhm_arcsec), (role, fwhm_arcsec)

    client = mlflow.MlflowClient(f"sqlite:///{os.fspath(root)}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("galpipe-tiny-realism")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert {r.info.status for r in runs} == {"FINISHED"}
    [pretrained] = [r for r in runs if r.data.params.get("role") == "pretrained"]
    params = pretrained.data.params
    assert params["source_sky_neighbours"] == params["source_sky_continuous_arms"] == "True"
    assert params["source_sky_irregular_arms"] == "True"
    assert params["source_sky_dust_lanes"] == "True" and params["source_sky_merger_fraction"] == "0.1"
    assert params["source_seeing_spread"] == "0.15" and params["source_label_false_positive_fraction"] == "0.1"
    # Each strategy fine-tuned on the 25 labels, logged its model and test metrics, and registered it.
    finetuned = {r.data.params["strategy"]: r for r in runs if r.data.params.get("label_budget") == "25"}
    assert set(finetuned) == set(UNLABELLED_TARGET_STRATEGIES)
    for name, run in finetuned.items():
        assert "target_test_accuracy" in run.data.metrics and run.outputs.model_outputs, name
        assert run.data.tags["dagster.asset"] == "finetuned_models", name
        assert int(run.data.params["n_unlabelled_target"]) > 0, name
    assert float(finetuned["contrastive"].data.params["contrastive_final_loss"]) > 0
    assert finetuned["contrastive_simulation"].data.params["contrastive_start"] == "source"
    assert finetuned["fixmatch"].data.params["fixmatch_start"] == "scratch"
    versions = client.search_model_versions("name = 'galpipe-tiny-realism-featured-des'")
    assert {v.run_id for v in versions} >= {r.info.run_id for r in finetuned.values()}
    # The contrastive strategies' networks pretrained without labels are pretrained models of their
    # own: made once with the source model (a run each, in the pretraining stage), registered, and
    # where each fine-tuning started.
    self_supervised = {r.data.params["strategy"]: r for r in runs if r.data.params.get("role") == "self_supervised"}
    assert set(self_supervised) == {"contrastive", "contrastive_simulation"}
    registered = {v.run_id: v for v in client.search_model_versions(
        "name = 'galpipe-tiny-realism-featured-des-self-supervised'")}
    for name, run in self_supervised.items():
        assert run.data.tags["dagster.asset"] == "pretrained_model" and run.data.tags["galpipe.stage"] == "pretraining"
        assert run.data.metrics["contrastive_final_loss"] > 0
        assert len(client.get_metric_history(run.info.run_id, "contrastive_loss")) == STRATEGIES.get(name).epochs
        version = registered[run.info.run_id]
        assert version.tags["role"] == "self_supervised" and version.tags["strategy"] == name
        uri = f"models:/galpipe-tiny-realism-featured-des-self-supervised/{version.version}"
        assert finetuned[name].data.params["self_supervised_model_uri"] == uri
        assert finetuned[name].data.params["contrastive_final_loss"] == str(round(run.data.metrics["contrastive_final_loss"], 4))
    assert self_supervised["contrastive_simulation"].data.params["pretrained_model_uri"] == \
        finetuned["contrastive_simulation"].data.params["pretrained_model_uri"]


def test_a_self_supervised_start_is_used_only_with_the_images_and_settings_it_was_made_from():
    """Fine-tuning starts from the registered network only if it saw this run's unlabelled images
    with this run's settings: not after new labels moved a galaxy into the test set, not for
    another seed's run, not after the learning rate changed."""
    config, rows = TrainConfig(seed=0, device="cpu"), np.arange(10)
    made = self_supervised_fingerprint(rows[::-1], config)
    assert made == self_supervised_fingerprint(rows, config)  # the rows' order does not matter
    assert made != self_supervised_fingerprint(rows[:-1], config)
    assert made != self_supervised_fingerprint(rows, dataclasses.replace(config, seed=1))
    assert made != self_supervised_fingerprint(rows, dataclasses.replace(config, learning_rate=2e-3))
