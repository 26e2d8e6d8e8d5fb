"""Size profiles: how big a simulated sky to build. `small` is the default (under 10 minutes
on 2 cores), `adapt` adds the adaptation strategies and label selections to it, `paper`
matches Dominguez Sanchez et al. 2019 (~5,000 DES galaxies, ~15,000 SDSS) with all of them,
`tiny` is for tests."""

from __future__ import annotations

from dataclasses import dataclass

from galpipe.simulation.population import SkyConfig


@dataclass(frozen=True)
class Profile:
    name: str
    sky: SkyConfig
    cutout_field_arcsec: float = 40.0  # the same angular field in every survey
    # "bands": g, r, i normalised per image (FITS); "colour": the Lupton colour composite, so that
    # the models also read the JPEG/PNG cutouts of survey viewers and Galaxy Zoo.
    input_mode: str = "bands"
    match_radius_arcsec: float = 1.0
    test_fraction: float = 0.4  # of the labelled target sample, never used for training
    # Transfer learning (DESIGN.md section 6): the architecture (galpipe.models.ARCHITECTURES) and
    # the paper's fine-tuning strategies (galpipe.experiment.strategies.STRATEGIES).
    architecture: str = "compact"
    strategies: tuple[str, ...] = ("full", "head_only", "scratch")
    # Tasks trained with a class-balanced loss: unweighted, the `small` profile's bar classifier
    # never predicted a bar (completeness 0 at every budget); balanced, 0.76 applied directly.
    class_balanced_tasks: tuple[str, ...] = ("bar",)
    label_budgets: tuple[str, ...] = ("0", "25", "50", "100", "300", "full")  # run by `galpipe run`
    seeds: tuple[int, ...] = (0, 1)
    # Beyond the paper (galpipe.adaptation): strategies that also learn from unlabelled target
    # images, and ways to choose the N galaxies to label besides at random, run at the
    # `adaptation_budgets` only (their question is how few labels suffice); the non-random
    # selections with `selection_strategies` only. Off in `small`, to keep it within 10 minutes.
    adaptation_strategies: tuple[str, ...] = ()
    selections: tuple[str, ...] = ("random",)
    selection_strategies: tuple[str, ...] = ("full", "self_training")
    adaptation_budgets: tuple[str, ...] = ("0", "25", "50")
    pretrain_max_epochs: int = 20
    finetune_max_epochs: int = 30
    patience: int = 5
    finetune_min_steps: int = 40  # so that 25 labels still get some optimisation
    batch_size: int = 64


ALL_LABEL_BUDGETS = ("0", "25", "50", "100", "300", "500", "1000", "full")

ADAPTATION = {"adaptation_strategies": ("adabn", "coral", "self_training"),
              "selections": ("random", "uncertainty", "diversity")}

PROFILES = {
    "tiny": Profile("tiny", SkyConfig(n_galaxies=160, target_footprint_fraction=0.5, seed=0),
                    label_budgets=("0", "25", "full"), seeds=(0,), pretrain_max_epochs=2,
                    adaptation_strategies=ADAPTATION["adaptation_strategies"], adaptation_budgets=("0", "25"),
                    selections=("random", "diversity"), selection_strategies=("full",),
                    finetune_max_epochs=2, finetune_min_steps=0, patience=2, batch_size=32),
    "small": Profile("small", SkyConfig(n_galaxies=2500, target_footprint_fraction=0.5, seed=0)),
    # `small`'s sky with the adaptation strategies and label selections (issue 6).
    "adapt": Profile("adapt", SkyConfig(n_galaxies=2500, target_footprint_fraction=0.5, seed=0),
                     label_budgets=("0", "25", "50", "300"), **ADAPTATION),
    "paper": Profile("paper", SkyConfig(n_galaxies=19000, target_footprint_fraction=0.33, seed=0),
                     label_budgets=ALL_LABEL_BUDGETS, seeds=(0, 1, 2), pretrain_max_epochs=50,
                     finetune_max_epochs=50, patience=10, **ADAPTATION),
}
DEFAULT_PROFILE = "small"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; known: {sorted(PROFILES)}") from None
