"""Fine-tuning strategies, registered by name in `STRATEGIES`. A strategy says what it needs
(unlabelled target images, another strategy's model as its teacher, batch normalisation),
whether it runs without target labels (budget 0), and how it trains from the source model.

- The paper's three are one parametrised `FineTuning` (in the spirit of Zoobot's fine-tuning
  class): `full` (every layer, learning rate 3e-4), `head_only` (features frozen, 1e-3) and
  `scratch` (a fresh network, 1e-3); these rates scale with a project's `learning_rate`.
- Beyond the paper (galpipe.adaptation): `adabn`, `coral`, `self_training`, which also learn from
  unlabelled target images and so run at budget 0 as unsupervised domain adaptation;
  `self_training_scratch`, the same with the `scratch` model of the N labels as its teacher;
  `contrastive` / `contrastive_simulation`, self-supervised on the unlabelled target images (from
  a fresh network / from the source model), then fine-tuned on the N labels (the self-supervised
  network is made with the pretrained model, galpipe.experiment.protocol); and `fixmatch` /
  `fixmatch_simulation`, semi-supervised: the N labels and the unlabelled images in one training.

A new strategy is a subclass of `Strategy` with a `train` method, registered as
`STRATEGIES.register("name", MyStrategy(...))`; README, "Extending galpipe".
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np

from galpipe.adaptation import (
    AdaptationData,
    Consistency,
    CoralAlignment,
    adapt_batch_norm,
    contrastive_pretrained,
    pseudo_labels,
)
from galpipe.models import GalaxyClassifier, build_model
from galpipe.registry import Registry
from galpipe.training import TrainConfig, predict_proba, train_classifier
from galpipe.transfer import LabelledSample


@dataclass(frozen=True)
class SelfSupervisedStart:
    """A network pretrained without labels (a `Contrastive` strategy's first stage), as it was
    registered: fine-tuning starts from it instead of computing it again."""

    model: GalaxyClassifier
    model_uri: str
    final_loss: float


@dataclass
class StrategyRun:
    """Everything one run of a strategy may use. `train`/`validation` are the N target labels
    (None at budget 0); `adaptation` is set for strategies that use unlabelled target images;
    `teacher` is the model of the strategy named by `Strategy.teacher`, same seed and labels;
    `self_supervised`, for a `Contrastive` strategy, its network pretrained without labels."""

    pretrained: GalaxyClassifier
    x: object  # the target model inputs (adaptation.x holds them followed by the source's)
    train: LabelledSample | None
    validation: LabelledSample | None
    config: TrainConfig
    architecture: str
    checkpoint_path: object = None
    adaptation: AdaptationData | None = None
    teacher: GalaxyClassifier | None = None
    self_supervised: SelfSupervisedStart | None = None


BASE_LEARNING_RATE = 1e-3  # the profile's default; a strategy's rate scales with the profile's


@dataclass(frozen=True)
class Strategy:
    learning_rate: float = 3e-4  # at the profile's default rate (BASE_LEARNING_RATE)
    uses_unlabelled_target: bool = False
    runs_without_labels: bool = False  # budget 0: unsupervised domain adaptation
    # False where a run without labels draws nothing at random (AdaBN): one seed is enough.
    random_without_labels: bool = True
    needs_batch_norm: bool = False
    teacher: str | None = None  # a strategy whose model (same seed and labels) this one learns from

    def config(self, base: TrainConfig) -> TrainConfig:
        """The training settings of a run: the base settings with this strategy's own."""
        return dataclasses.replace(base, learning_rate=self.scaled_rate(base))

    def scaled_rate(self, base: TrainConfig) -> float:
        """The strategy's learning rate in proportion to the profile's (exactly its own at the default)."""
        return self.learning_rate * (base.learning_rate / BASE_LEARNING_RATE)

    def train(self, run: StrategyRun) -> tuple[GalaxyClassifier, list[dict], dict]:
        """(model, history, extra parameters to log)."""
        raise NotImplementedError


@dataclass(frozen=True)
class FineTuning(Strategy):
    """Trained further on the N target labels: every layer, or the head only (`trainable`), from
    the source model or from a fresh network (`from_scratch`)."""

    trainable: str = "all"  # "all" or "head"
    from_scratch: bool = False

    def config(self, base: TrainConfig) -> TrainConfig:
        return dataclasses.replace(super().config(base), training_mode="head_only" if self.trainable == "head" else "full")

    def train(self, run: StrategyRun):
        model = (build_model(run.architecture, seed=run.config.seed) if self.from_scratch
                 else copy.deepcopy(run.pretrained))
        history = train_classifier(model, run.x, run.train.row, run.train.label, run.validation.row,
                                   run.validation.label, run.config, run.checkpoint_path)
        return model, history, {}


@dataclass(frozen=True)
class AdaBN(Strategy):
    """Batch-norm statistics re-estimated on the unlabelled target images; given N labels, then
    fine-tuned like `full`."""

    uses_unlabelled_target: bool = True
    runs_without_labels: bool = True
    random_without_labels: bool = False
    needs_batch_norm: bool = True

    def train(self, run: StrategyRun):
        data = run.adaptation
        model = adapt_batch_norm(copy.deepcopy(run.pretrained), data.x, data.unlabelled_rows)
        extra = {"n_unlabelled_target": len(data.unlabelled_rows)}
        if run.train is None:
            return model, [], extra
        history = train_classifier(model, data.x, run.train.row, run.train.label, run.validation.row,
                                   run.validation.label, run.config, run.checkpoint_path)
        return model, history, extra


SOURCE_ROWS_PER_RUN = 512  # coral: source galaxies drawn per run (pretraining saw them all)


@dataclass(frozen=True)
class Coral(Strategy):
    """Trained further on source labels (plus the N target labels, oversampled to about half of
    the labelled set) with a CORAL loss aligning source and target embeddings."""

    uses_unlabelled_target: bool = True
    runs_without_labels: bool = True
    alignment_weight: float = 1.0

    def train(self, run: StrategyRun):
        data = run.adaptation
        rng = np.random.default_rng([run.config.seed, 5])
        n_source = min(len(data.source_train), SOURCE_ROWS_PER_RUN)
        source = data.source_train.subset(np.sort(rng.choice(len(data.source_train), n_source, replace=False)))
        rows, labels = source.row, source.label
        if run.train is not None:
            target_rows, target_labels = _repeated(run.train, max(1, n_source // len(run.train)))
            rows, labels = np.concatenate([rows, target_rows]), np.concatenate([labels, target_labels])
        validation = run.validation if run.validation is not None else data.source_validation
        objective = CoralAlignment(data.unlabelled_rows, self.alignment_weight)
        model = copy.deepcopy(run.pretrained)
        history = train_classifier(model, data.x, rows, labels, validation.row, validation.label, run.config,
                                   run.checkpoint_path, objective=objective)
        return model, history, {"n_unlabelled_target": len(data.unlabelled_rows), "n_source_labelled": n_source,
                                **objective.params()}


@dataclass(frozen=True)
class SelfTraining(Strategy):
    """A teacher labels the target galaxies it is surest of, keeping its class balance; its copy
    is trained on those pseudo-labels and the N real labels (as Khan et al. 2019 did from SDSS to
    DES). The teacher: the model of strategy `teacher` (`full` by default) for the same N labels;
    with no labels, the source model after AdaBN (or as it is, for a network without batch norm)."""

    uses_unlabelled_target: bool = True
    runs_without_labels: bool = True
    teacher: str | None = "full"

    def train(self, run: StrategyRun):
        data = run.adaptation
        model = copy.deepcopy(run.teacher if run.teacher is not None else run.pretrained)
        if run.teacher is None and model.batch_norm_layers():
            adapt_batch_norm(model, data.x, data.unlabelled_rows)  # without labels, AdaBN is the best teacher
        validation = run.validation if run.validation is not None else data.source_validation
        candidates = data.unlabelled_except(run.train, validation)
        chosen, pseudo = pseudo_labels(predict_proba(model, data.x[candidates]))
        rows, labels = candidates[chosen], pseudo
        if run.train is not None:  # the real labels keep about a quarter of the weight
            real_rows, real_labels = _repeated(run.train, max(1, len(chosen) // (3 * len(run.train))))
            rows, labels = np.concatenate([rows, real_rows]), np.concatenate([labels, real_labels])
        history = train_classifier(model, data.x, rows, labels, validation.row, validation.label, run.config,
                                   run.checkpoint_path)
        teacher = self.teacher if run.teacher is not None else "adabn" if model.batch_norm_layers() else "pretrained"
        return model, history, {"n_unlabelled_target": len(data.unlabelled_rows), "n_pseudo_labels": len(chosen),
                                "pseudo_label_positive_fraction": round(float(pseudo.mean()), 4),
                                "teacher": teacher}


@dataclass(frozen=True)
class Contrastive(Strategy):
    """Self-supervised pretraining (SimCLR) on the unlabelled target images, from a fresh network
    (`from_scratch`) or from the source model, then every layer fine-tuned on the N labels."""

    learning_rate: float = 1e-3
    uses_unlabelled_target: bool = True
    from_scratch: bool = True
    epochs: int = 50  # of contrastive learning, before fine-tuning
    temperature: float = 0.2

    def pretrain_without_labels(self, source_model: GalaxyClassifier, architecture: str, data: AdaptationData,
                                config: TrainConfig) -> tuple[GalaxyClassifier, list[dict]]:
        """The first stage alone: SimCLR on the unlabelled target images from this strategy's start
        (a fresh network of the seed, or `source_model`), and its loss per epoch."""
        start = build_model(architecture, seed=config.seed) if self.from_scratch else source_model
        return contrastive_pretrained(start, data.x, data.unlabelled_rows, config, self.epochs, self.temperature)

    def train(self, run: StrategyRun):
        data = run.adaptation
        if run.self_supervised is not None:  # made, logged and registered with the pretrained model
            model, final_loss = copy.deepcopy(run.self_supervised.model), run.self_supervised.final_loss
        else:
            model, pretraining = self.pretrain_without_labels(run.pretrained, run.architecture, data, run.config)
            final_loss = pretraining[-1]["contrastive_loss"]
        history = train_classifier(model, data.x, run.train.row, run.train.label, run.validation.row,
                                   run.validation.label, run.config, run.checkpoint_path)
        return model, history, {"n_unlabelled_target": len(data.unlabelled_rows), "contrastive_epochs": self.epochs,
                                "contrastive_start": "scratch" if self.from_scratch else "source",
                                "contrastive_final_loss": round(final_loss, 4),
                                "self_supervised_model_uri": run.self_supervised.model_uri if run.self_supervised
                                else "made in this run"}


@dataclass(frozen=True)
class SemiSupervised(Strategy):
    """FixMatch: every layer trained on the N labels and, in the same steps, on the unlabelled
    target images the network is already sure of (galpipe.adaptation.Consistency), from a fresh
    network (`from_scratch`) or from the source model. The N labelled and validation galaxies are
    left out of the unlabelled ones."""

    learning_rate: float = 1e-3
    uses_unlabelled_target: bool = True
    from_scratch: bool = True
    threshold: float = 0.95

    def train(self, run: StrategyRun):
        data = run.adaptation
        model = build_model(run.architecture, seed=run.config.seed) if self.from_scratch else copy.deepcopy(run.pretrained)
        objective = Consistency(data.unlabelled_except(run.train, run.validation), self.threshold)
        history = train_classifier(model, data.x, run.train.row, run.train.label, run.validation.row,
                                   run.validation.label, run.config, run.checkpoint_path, objective=objective)
        return model, history, {"n_unlabelled_target": len(data.unlabelled_rows),
                                "n_unlabelled_used": len(objective.unlabelled_rows),
                                "fixmatch_start": "scratch" if self.from_scratch else "source", **objective.params()}


def _repeated(sample: LabelledSample, times: int) -> tuple[np.ndarray, np.ndarray]:
    return np.tile(sample.row, times), np.tile(sample.label, times)


STRATEGIES: Registry[Strategy] = Registry("fine-tuning strategy")
STRATEGIES.register("full", FineTuning(learning_rate=3e-4))
STRATEGIES.register("head_only", FineTuning(learning_rate=1e-3, trainable="head"))
STRATEGIES.register("scratch", FineTuning(learning_rate=1e-3, from_scratch=True))
STRATEGIES.register("adabn", AdaBN())
STRATEGIES.register("coral", Coral())
STRATEGIES.register("self_training", SelfTraining())
# Where the source does not transfer (the real spirals), the teacher is the network trained from
# scratch on the N labels instead; it needs labels, so it has no budget-0 run.
STRATEGIES.register("self_training_scratch", SelfTraining(teacher="scratch", runs_without_labels=False))
STRATEGIES.register("contrastive", Contrastive())
STRATEGIES.register("contrastive_simulation", Contrastive(learning_rate=3e-4, from_scratch=False))
STRATEGIES.register("fixmatch", SemiSupervised())
STRATEGIES.register("fixmatch_simulation", SemiSupervised(learning_rate=3e-4, from_scratch=False))

DIRECT = "direct"  # budget 0 without a strategy: the source model applied as it is


def adaptation_strategies() -> list[str]:
    """The registered strategies that learn from unlabelled target images."""
    return [name for name in STRATEGIES if STRATEGIES.get(name).uses_unlabelled_target]
