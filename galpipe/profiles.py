"""An experiment's settings: the simulated sky (where a survey is simulated), the input mode, the
split, and the transfer protocol (architecture, strategies, label budgets, seeds, epochs). A
project file (galpipe.project) sets any of them; the shipped projects in galpipe/projects/ are the
built-in profiles: `small` is the default (under 10 minutes on 2 cores), `adapt` adds the
adaptation strategies and label selections to it, `paper` matches Dominguez Sanchez et al. 2019
(~5,000 DES galaxies, ~15,000 SDSS) with all of them, `tiny` is for tests."""

from __future__ import annotations

from dataclasses import dataclass

from galpipe.simulation.population import SkyConfig


@dataclass(frozen=True)
class Profile:
    name: str
    sky: SkyConfig
    # "bands": g, r, i normalised per image (FITS); "colour": a colour image (FITS rendered as
    # `colour_rendering` says), so that the models also read the JPEG/PNG cutouts of survey viewers
    # and Galaxy Zoo.
    input_mode: str = "bands"
    # How FITS cutouts become colour images in colour mode (galpipe.preprocessing.COLOUR_RENDERINGS):
    # "lupton", a composite on a surface-brightness scale; "lupton_balanced", the same with the bands
    # weighted as survey viewers weight them; "sdss_viewer", a survey viewer's asinh stretch and JPEG.
    colour_rendering: str = "lupton"
    match_radius_arcsec: float = 1.0
    test_fraction: float = 0.4  # of the labelled target sample, never used for training
    # Pretraining leaves out the source counterparts of the target test galaxies (the same objects,
    # their labels carried across by cross-matching); True puts them back, to measure what they add.
    pretrain_on_test_counterparts: bool = False
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
    # The optimiser and augmentation (galpipe.training.TrainConfig): the paper's constant-rate Adam
    # and affine augmentation by default; "one_cycle" and "galaxy" for the stronger learners.
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    augmentation: str = "affine"
    # The pretraining's, if not `augmentation`: "survey" randomises the simulated survey's seeing,
    # stretch, colours and depth (galpipe.training.survey_randomised), so that the network cannot
    # lean on the simulation's own rendering.
    pretraining_augmentation: str = ""
    # Training's numeric precision (galpipe.hardware.PRECISIONS). "auto" trains in bf16 where the CPU
    # or GPU has it natively, so a table differs between machines with and without it (README,
    # Reproducibility); "fp32" takes the same numeric path everywhere, at some speed.
    precision: str = "auto"


ALL_LABEL_BUDGETS = ("0", "25", "50", "100", "300", "500", "1000", "full")
INPUT_MODES = ("bands", "colour")
