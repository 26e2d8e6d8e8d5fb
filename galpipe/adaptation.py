"""Learning from the unlabelled target survey, and choosing which target galaxies to label.

Adaptation (each starts from the source-trained model):
- `adabn`: the batch-norm statistics re-estimated on unlabelled target images (Li et al. 2016),
  then, given N labels, fine-tuned like `full`;
- `coral`: trained further on source labels (plus the N target labels, oversampled to half of the
  labelled set) with a CORAL loss that aligns the covariance of source and target embeddings
  (Sun & Saenko 2016), batch norm frozen at the source statistics;
- `self_training`: a teacher (the `full` model fine-tuned on the N labels; with no labels, the
  source model after AdaBN) labels the target galaxies it is surest of, keeping its class
  balance; its copy is trained on those pseudo-labels and the N real labels (as Khan et al.
  2019 did from SDSS to DES).
With budget 0 each is unsupervised domain adaptation.

Selection of the N galaxies to label from the pool: `random`; `uncertainty` (the source model's
probability closest to 0.5); `diversity` (greedy k-centre on the source model's embeddings among
the 4N most uncertain, so that the N are not N near-copies of one ambiguous kind of galaxy).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from galpipe.hardware import channels_last
from galpipe.transfer import LabelledSample, choose_budget, take_budget

ADAPTATION_STRATEGIES = ("adabn", "coral", "self_training")
SELECTIONS = ("random", "uncertainty", "diversity")


class StackedArrays:
    """Several arrays read as one, rows numbered on from one to the next: the source and target
    model inputs in one training set without copying either (both may be memory-mapped)."""

    def __init__(self, *arrays):
        self.arrays = arrays
        self.offsets = np.cumsum([0] + [len(a) for a in arrays])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def offset(self, k: int) -> int:
        return int(self.offsets[k])

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.asarray(rows)
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        out = np.empty((len(rows), *self.arrays[0].shape[1:]), np.float32)
        for k, array in enumerate(self.arrays):
            mine = which == k
            if mine.any():
                out[mine] = array[rows[mine] - self.offsets[k]]
        return out


def embed(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The representation the last linear layer classifies (64 numbers for compact and ds18)."""
    return model.head[:-1](model.features(inputs))


def classify_embedding(model: nn.Module, embedding: torch.Tensor) -> torch.Tensor:
    return model.head[-1](embedding).squeeze(-1)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius distance between the two feature covariances, over 4 d^2 (zero for a
    batch of one, whose covariance is undefined)."""
    if min(len(source), len(target)) < 2:
        return source.new_zeros(())
    d = source.shape[1]
    covariance = lambda f: torch.cov(f.float().T)  # noqa: E731
    return ((covariance(source) - covariance(target)) ** 2).sum() / (4 * d * d)


def embeddings(model: nn.Module, x, rows: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """embed() of x[rows], in the order of `rows` (read in increasing row order)."""
    device = next(model.parameters()).device
    order = np.argsort(rows, kind="stable")
    sorted_rows = np.asarray(rows)[order]
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(sorted_rows), batch_size):
            batch = np.ascontiguousarray(x[sorted_rows[start:start + batch_size]], np.float32)
            out.append(embed(model, channels_last(torch.from_numpy(batch).to(device))).float().cpu().numpy())
    result = np.empty((len(rows), out[0].shape[1]) if out else (0, 0), np.float32)
    result[order] = np.concatenate(out) if out else result
    return result


def domain_distance(source_embeddings: np.ndarray, target_embeddings: np.ndarray) -> float:
    """How far apart the two surveys look to a model: the squared distance of the means of their
    embeddings plus the Frobenius distance of their covariances, over the source's total variance."""
    scale = float(np.trace(np.cov(source_embeddings.T))) or 1.0
    mean_gap = float(np.sum((source_embeddings.mean(0) - target_embeddings.mean(0)) ** 2))
    covariance_gap = float(np.sum((np.cov(source_embeddings.T) - np.cov(target_embeddings.T)) ** 2))
    return (mean_gap + np.sqrt(covariance_gap)) / scale


def adapt_batch_norm(model: nn.Module, x, rows: np.ndarray, batch_size: int = 256) -> nn.Module:
    """AdaBN, in place: every batch-norm layer's running mean and variance re-estimated from the
    images x[rows] (an equal-weight average over batches); nothing else changes."""
    norms = batch_norm_layers(model)
    if not norms:
        raise ValueError(f"{type(model).__name__} has no batch normalisation: AdaBN does not apply to it")
    device = next(model.parameters()).device
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.eval()
    for m in norms:
        m.train()
    rows = np.sort(rows)
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = np.ascontiguousarray(x[rows[start:start + batch_size]], np.float32)
            model.features(channels_last(torch.from_numpy(batch).to(device)))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()
    return model


def pseudo_labels(probability: np.ndarray, keep_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(indices, labels) of the galaxies a teacher is surest of, in its own class balance: it
    expects sum(p) positives; the `keep_fraction` of those with the highest p become 1, the same
    fraction of the rest with the lowest p become 0. So the rarer class keeps its share (a
    threshold on confidence would hand nearly every pseudo-label to the confident majority), and
    both classes are present even when the teacher predicts no galaxy above 0.5."""
    probability = np.asarray(probability, dtype=np.float64)
    n_positive = int(np.clip(np.round(probability.sum()), 1, len(probability) - 1))
    order = np.argsort(-probability, kind="stable")
    positives = order[:max(1, int(keep_fraction * n_positive))]
    negatives = order[::-1][:max(1, int(keep_fraction * (len(probability) - n_positive)))]
    index = np.concatenate([positives, negatives])
    labels = np.concatenate([np.ones(len(positives), int), np.zeros(len(negatives), int)])
    order = np.argsort(index)
    return index[order], labels[order]


def batch_norm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def has_batch_norm(model: nn.Module) -> bool:
    return bool(batch_norm_layers(model))


def select_for_labelling(pool: LabelledSample, budget: int, seed: int, selection: str,
                         probability: np.ndarray | None = None, pool_embeddings: np.ndarray | None = None
                         ) -> LabelledSample:
    """The N pool galaxies to label. `probability` (uncertainty, diversity) and `pool_embeddings`
    (diversity) are the source model's, one per pool galaxy. Labels are read only for the chosen
    galaxies, and as for `random`, both classes are made sure of (`take_budget`)."""
    if selection == "random":
        return choose_budget(pool, budget, seed)
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; known: {SELECTIONS}")
    uncertainty_order = np.argsort(np.abs(np.asarray(probability) - 0.5), kind="stable")
    if selection == "uncertainty":
        return take_budget(pool, uncertainty_order, budget)
    candidates = uncertainty_order[:min(len(pool), 4 * budget)]
    picked = set(candidates[_k_centre(pool_embeddings[candidates], budget,
                                      np.random.default_rng([seed, budget, 11]))].tolist())
    ranked = [i for i in candidates if i in picked] + [i for i in uncertainty_order if i not in picked]
    return take_budget(pool, ranked, budget)


def _k_centre(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-centre: each next point the one farthest from those already picked."""
    picked = [int(rng.integers(len(points)))]
    distance = np.linalg.norm(points - points[picked[0]], axis=1)
    while len(picked) < min(k, len(points)):
        nxt = int(np.argmax(distance))
        picked.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(points - points[nxt], axis=1))
    return np.array(picked)


# --- the strategies, as the finetuned_models asset runs them -----------------------------------

SOURCE_ROWS_PER_RUN = 512  # coral: source galaxies drawn per run (pretraining saw them all)
CORAL_WEIGHT = 1.0


@dataclass
class AdaptationData:
    """What the adaptation strategies may read: `x` holds the target model inputs, then the
    source ones (source rows offset by the number of target rows)."""

    x: StackedArrays
    source_train: LabelledSample
    source_validation: LabelledSample
    unlabelled_rows: np.ndarray  # target rows of every galaxy outside the test set, labelled or not

    @classmethod
    def build(cls, x_target, x_source, source_train: LabelledSample, source_validation: LabelledSample,
              unlabelled_rows: np.ndarray) -> "AdaptationData":
        x = StackedArrays(x_target, x_source)
        shift = lambda s: LabelledSample(s.object_id, s.row + x.offset(1), s.label)  # noqa: E731
        return cls(x, shift(source_train), shift(source_validation), np.sort(np.asarray(unlabelled_rows)))


def strategy_config(strategy: str, config):
    """The training settings a strategy runs with (coral: the alignment loss switched on)."""
    if strategy == "coral" and config.alignment_weight <= 0:
        return dataclasses.replace(config, alignment_weight=CORAL_WEIGHT)
    return config


def _repeated(sample: LabelledSample, times: int) -> tuple[np.ndarray, np.ndarray]:
    return np.tile(sample.row, times), np.tile(sample.label, times)


def train_adapted(strategy: str, pretrained: nn.Module, train: LabelledSample | None,
                  validation: LabelledSample | None, data: AdaptationData, config, checkpoint_path=None,
                  teacher: nn.Module | None = None) -> tuple[nn.Module, list[dict], dict]:
    """One run of an adaptation strategy from the source model. `train`/`validation` are the N
    target labels split (None at budget 0: then the source validation set stops training early,
    as no target label may be used). Returns the model, its history and the extra parameters
    to log."""
    from galpipe.training import predict_proba, train_classifier  # training imports this module

    if strategy not in ADAPTATION_STRATEGIES:
        raise ValueError(f"unknown adaptation strategy {strategy!r}; known: {ADAPTATION_STRATEGIES}")
    validation = validation if validation is not None else data.source_validation
    model = copy.deepcopy(teacher if strategy == "self_training" and teacher is not None else pretrained)
    extra = {"n_unlabelled_target": len(data.unlabelled_rows)}
    if strategy == "adabn" or (strategy == "self_training" and teacher is None and has_batch_norm(model)):
        adapt_batch_norm(model, data.x, data.unlabelled_rows)  # without labels, AdaBN is the best teacher
    if strategy == "adabn":
        if train is None:
            return model, [], extra
        rows, labels = train.row, train.label
    elif strategy == "coral":
        rng = np.random.default_rng([config.seed, 5])
        n_source = min(len(data.source_train), SOURCE_ROWS_PER_RUN)
        source = data.source_train.subset(np.sort(rng.choice(len(data.source_train), n_source, replace=False)))
        rows, labels = source.row, source.label
        if train is not None:  # the N target labels oversampled to about half of the labelled set
            target_rows, target_labels = _repeated(train, max(1, n_source // len(train)))
            rows, labels = np.concatenate([rows, target_rows]), np.concatenate([labels, target_labels])
        config = strategy_config(strategy, config)
        extra.update(n_source_labelled=n_source)
    else:  # self_training
        used = np.concatenate([s.row for s in (train, validation) if s is not None])
        candidates = np.setdiff1d(data.unlabelled_rows, used)
        probability = predict_proba(model, data.x[candidates])
        chosen, pseudo = pseudo_labels(probability)
        rows, labels = candidates[chosen], pseudo
        if train is not None:  # the real labels keep about a quarter of the weight
            real_rows, real_labels = _repeated(train, max(1, len(chosen) // (3 * len(train))))
            rows, labels = np.concatenate([rows, real_rows]), np.concatenate([labels, real_labels])
        extra.update(n_pseudo_labels=len(chosen), pseudo_label_positive_fraction=round(float(pseudo.mean()), 4),
                     teacher="full" if teacher is not None else "adabn" if has_batch_norm(model) else "pretrained")
    history = train_classifier(model, data.x, rows, labels, validation.row, validation.label, config,
                               checkpoint_path, unlabelled_rows=data.unlabelled_rows)
    return model, history, extra
