"""Learning from the unlabelled target survey: the science behind the adaptation strategies
(galpipe.experiment.strategies) and the label selections (galpipe.experiment.selections).

Adaptation (each starts from the source-trained model):
- `adabn`: the batch-norm statistics re-estimated on unlabelled target images (Li et al. 2016),
  then, given N labels, fine-tuned like `full`;
- `coral`: trained further on source labels (plus the N target labels, oversampled to half of the
  labelled set) with a CORAL loss that aligns the covariance of source and target embeddings
  (Sun & Saenko 2016), batch norm frozen at the source statistics;
- `self_training`: a teacher (the `full` model fine-tuned on the N labels, or for
  `self_training_scratch` the `scratch` one; with no labels, the source model after AdaBN)
  labels the target galaxies it is surest of, keeping its class balance; its copy is trained on
  those pseudo-labels and the N real labels (as Khan et al. 2019 did from SDSS to DES).
With budget 0 each is unsupervised domain adaptation.

Semi-supervised (`fixmatch`, `fixmatch_simulation`): FixMatch (Sohn et al. 2020) trains on the N
labels and, at once, teaches the network to give a strongly distorted view of an unlabelled target
galaxy the class it is already sure of on a weak view, the galaxy turned and flipped (`Consistency`).

Self-supervised (`contrastive`, `contrastive_simulation`): SimCLR (Chen et al. 2020) on the
unlabelled target images, as Hayat et al. (2021) did for SDSS: the network learns to tell two
augmented views of one galaxy from those of other galaxies, from a fresh start or from the source
model, and is then fine-tuned on the N labels.

Selection of the N galaxies to label from the pool: `random`; `uncertainty` (the source model's
probability closest to 0.5); `diversity` (greedy k-centre on the source model's embeddings among
the 4N most uncertain, so that the N are not N near-copies of one ambiguous kind of galaxy).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galpipe.hardware import autocast, channels_last
from galpipe.models import GalaxyClassifier
from galpipe.training import Objective, Step, TrainConfig, augment_batch, image_batches, read_rows
from galpipe.transfer import LabelledSample


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


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius distance between the two feature covariances, over 4 d^2 (zero for a
    batch of one, whose covariance is undefined). Always in fp32, autocast or not: bf16's 8-bit
    mantissa would round the covariances, and the loss is their small difference."""
    if min(len(source), len(target)) < 2:
        return source.new_zeros((), dtype=torch.float32)
    d = source.shape[1]
    covariance = lambda f: torch.cov(f.float().T)  # noqa: E731
    with torch.autocast(source.device.type, enabled=False):
        return ((covariance(source) - covariance(target)) ** 2).sum() / (4 * d * d)


class CoralAlignment(Objective):
    """Cross-entropy on the labelled batch plus `weight` x the CORAL loss between its embeddings
    and those of as many unlabelled target images, drawn with the run's own generators. Batch
    norm stays at the source's statistics, so that both surveys are normalised alike in training
    and evaluation and the loss alone must align them."""

    def __init__(self, unlabelled_rows: np.ndarray, weight: float = 1.0):
        if len(unlabelled_rows) < 2:
            raise ValueError("CORAL needs unlabelled rows (at least 2) to align with")
        self.unlabelled_rows, self.weight = np.asarray(unlabelled_rows), weight

    def params(self) -> dict:
        return {"alignment": "coral", "alignment_weight": self.weight}

    def fingerprint_arrays(self) -> list:
        return [self.unlabelled_rows]

    def start_epoch(self, model: GalaxyClassifier) -> None:
        for norm in model.batch_norm_layers():
            norm.eval()

    def loss(self, model: GalaxyClassifier, inputs: torch.Tensor, target: torch.Tensor, step: Step) -> torch.Tensor:
        n = len(inputs)
        drawn = np.sort(step.rng.choice(self.unlabelled_rows, n, replace=len(self.unlabelled_rows) < n))
        unlabelled = read_rows(step.x, drawn, step.device)
        unlabelled = augment_batch(unlabelled, step.generator, step.augmentation) if step.augment else unlabelled
        with autocast(step.device, step.precision):
            embedding = model.embed(channels_last(torch.cat([inputs, unlabelled])))
            logits = model.classify(embedding[:n]).float()
            alignment = coral_loss(embedding[:n], embedding[n:])
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=step.pos_weight) + self.weight * alignment


def erased(x: torch.Tensor, generator: torch.Generator, max_side_fraction: float = 0.5) -> torch.Tensor:
    """Each image with a random square of it set to 0 (Cutout, DeVries & Taylor 2017, as FixMatch's
    strong augmentation ends): a side of up to `max_side_fraction` of the image's, anywhere, clipped
    at the edges. 0 is the sky of a normalised image."""
    n, _, height, width = x.shape
    side = (torch.rand(n, generator=generator) * max_side_fraction * min(height, width)).view(n, 1, 1)
    centre_y = (torch.rand(n, generator=generator) * height).view(n, 1, 1)
    centre_x = (torch.rand(n, generator=generator) * width).view(n, 1, 1)
    y, x_ = torch.arange(height).view(1, -1, 1), torch.arange(width).view(1, 1, -1)
    inside = ((y - centre_y).abs() < side / 2) & ((x_ - centre_x).abs() < side / 2)
    return x * (~inside).unsqueeze(1).to(x.dtype).to(x.device)


def weak_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image turned by a random multiple of 90 degrees and flipped or not: FixMatch's weak view,
    here without loss (no resampling, no jitter), since a galaxy has no up or left."""
    turns = torch.randint(0, 4, (len(x),), generator=generator)
    flips = torch.rand(len(x), generator=generator) < 0.5
    out = x.clone()
    for k in range(1, 4):
        chosen = (turns == k).to(x.device)
        out[chosen] = torch.rot90(x[chosen], k, dims=(2, 3))
    flips = flips.to(x.device)
    out[flips] = out[flips].flip(3)
    return out


def fixmatch_loss(weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float,
                  pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """FixMatch's unlabelled term: per image, the strong view's cross-entropy against the weak
    view's class where the weak view's probability of it is at least `threshold`, else 0; averaged
    over every image (the sure and the unsure), as Sohn et al. do. Positives weighted as the
    labelled term weights them (`pos_weight`), so that a rare class keeps its weight here too."""
    p_weak = torch.sigmoid(weak_logits.detach().float())
    sure = (torch.maximum(p_weak, 1 - p_weak) >= threshold).float()
    pseudo = (p_weak >= 0.5).float()
    per_image = F.binary_cross_entropy_with_logits(strong_logits.float(), pseudo, pos_weight=pos_weight, reduction="none")
    return (per_image * sure).mean()


class Consistency(Objective):
    """FixMatch (Sohn et al. 2020): cross-entropy on the labelled batch plus `weight` x
    fixmatch_loss on unlabelled target images: the class the network gives a weak view of each
    (weak_view: a turn by a multiple of 90 degrees, a flip), where it is at least `threshold` sure,
    is the label of a strong view of the same galaxy (any turn, flips, shifts and zoom, with the
    survey randomised: blur, stretch, band gains, noise; then a square erased). Each step
    draws `unlabelled_per_step` unlabelled images, whatever the labelled batch's size, so that a
    few labels still meet the whole unlabelled set within a run. FixMatch is made of augmentation:
    the run's `augment` setting (for the labelled batch) does not turn it off. All three batches go
    through the network together, so batch norm sees them as one."""

    def __init__(self, unlabelled_rows: np.ndarray, threshold: float = 0.95, weight: float = 1.0,
                 unlabelled_per_step: int = 128):
        if len(unlabelled_rows) < 1:
            raise ValueError("consistency training needs unlabelled rows")
        if not 0.5 <= threshold < 1:
            raise ValueError(f"threshold {threshold}: give a confidence in [0.5, 1)")
        self.unlabelled_rows, self.threshold, self.weight = np.asarray(unlabelled_rows), threshold, weight
        self.unlabelled_per_step = unlabelled_per_step

    def params(self) -> dict:
        return {"consistency": "fixmatch", "consistency_threshold": self.threshold, "consistency_weight": self.weight,
                "unlabelled_per_step": self.unlabelled_per_step}

    def fingerprint_arrays(self) -> list:
        return [self.unlabelled_rows]

    def loss(self, model: GalaxyClassifier, inputs: torch.Tensor, target: torch.Tensor, step: Step) -> torch.Tensor:
        n, m = len(inputs), self.unlabelled_per_step
        drawn = np.sort(step.rng.choice(self.unlabelled_rows, m, replace=len(self.unlabelled_rows) < m))
        unlabelled = read_rows(step.x, drawn, step.device)
        weak = weak_view(unlabelled, step.generator)
        strong = erased(augment_batch(unlabelled, step.generator, "survey"), step.generator)
        with autocast(step.device, step.precision):
            logits = model(channels_last(torch.cat([inputs, weak, strong]))).float()
        return (F.binary_cross_entropy_with_logits(logits[:n], target, pos_weight=step.pos_weight)
                + self.weight * fixmatch_loss(logits[n:n + m], logits[n + m:], self.threshold, step.pos_weight))


def embeddings(model: GalaxyClassifier, x, rows: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """model.embed() of x[rows], in the order of `rows`."""
    device = next(model.parameters()).device.type
    model.eval()
    result = None
    with torch.no_grad():
        for positions, images in image_batches(x, rows, batch_size, device):
            out = model.embed(images).float().cpu().numpy()
            result = np.empty((len(rows), out.shape[1]), np.float32) if result is None else result
            result[positions] = out
    return result if result is not None else np.zeros((0, 0), np.float32)


def domain_distance(source_embeddings: np.ndarray, target_embeddings: np.ndarray) -> float:
    """How far apart the two surveys look to a model: the squared distance of the means of their
    embeddings plus the Frobenius distance of their covariances, over the source's total variance."""
    scale = float(np.trace(np.cov(source_embeddings.T))) or 1.0
    mean_gap = float(np.sum((source_embeddings.mean(0) - target_embeddings.mean(0)) ** 2))
    covariance_gap = float(np.sum((np.cov(source_embeddings.T) - np.cov(target_embeddings.T)) ** 2))
    return (mean_gap + np.sqrt(covariance_gap)) / scale


def adapt_batch_norm(model: GalaxyClassifier, x, rows: np.ndarray, batch_size: int = 256) -> GalaxyClassifier:
    """AdaBN, in place: every batch-norm layer's running mean and variance re-estimated from the
    images x[rows] (an equal-weight average over batches); nothing else changes."""
    norms = model.batch_norm_layers()
    if not norms:
        raise ValueError(f"{type(model).__name__} has no batch normalisation: AdaBN does not apply to it")
    device = next(model.parameters()).device.type
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.eval()
    for m in norms:
        m.train()
    with torch.no_grad():
        for _, images in image_batches(x, rows, batch_size, device):
            model.features(images)
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

    def unlabelled_except(self, *samples: LabelledSample | None) -> np.ndarray:
        """The unlabelled rows without those of `samples` (a run's own labelled galaxies; None skipped)."""
        rows = [s.row for s in samples if s is not None]
        return np.setdiff1d(self.unlabelled_rows, np.concatenate([np.zeros(0, np.int64), *rows]))


def contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent: each view must pick its partner (the other view of the same galaxy) out of the
    2n - 1 other views of the batch."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    n = len(z1)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(similarity, partner)


CONTRASTIVE_WEIGHT_DECAY = 1e-4
_CONTRASTIVE_CACHE: dict[str, tuple[dict, list[dict]]] = {}  # one per start, rows and settings: budgets share it


def contrastive_pretrained(model: GalaxyClassifier, x, rows: np.ndarray, config: TrainConfig, epochs: int,
                           temperature: float = 0.2, batch_size: int = 128) -> tuple[GalaxyClassifier, list[dict]]:
    """`model` after SimCLR on the images x[rows] (a copy; its classifying layer untouched), and the
    loss per epoch. Two "galaxy" augmentations of each image (any rotation, flips, zoom, band gain,
    noise) are the positive pair; a projection head, dropped afterwards, maps embeddings to the
    space the loss compares. Every label budget of a seed starts from the same start, so the
    result is kept for the process, keyed by the start, the images and the settings: the budgets
    of one `galpipe run` compute it once (runs launched from the Dagster UI, each a process of
    its own, compute it each time)."""
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    digest.update(np.ascontiguousarray(x[np.sort(rows)], dtype=np.float32).tobytes())
    digest.update(repr((config.seed, config.learning_rate, config.precision, config.device, epochs, temperature,
                        batch_size, CONTRASTIVE_WEIGHT_DECAY)).encode())
    key = digest.hexdigest()
    model = copy.deepcopy(model)
    if key in _CONTRASTIVE_CACHE:
        state, history = _CONTRASTIVE_CACHE[key]
        model.load_state_dict(state)
        return model, history
    device = config.device
    model.to(device).to(memory_format=torch.channels_last)
    width = model.head[-1].in_features  # the embedding the classifying layer reads
    with torch.random.fork_rng(devices=[]):  # the head from the seed alone, wherever this runs
        torch.manual_seed(config.seed)
        projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 32)).to(device)
    trained = [*model.parameters(), *projection.parameters()]
    optimiser = torch.optim.AdamW(trained, lr=config.learning_rate, weight_decay=CONTRASTIVE_WEIGHT_DECAY)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng([config.seed, 11])
    rows = np.asarray(rows)
    history = []
    for epoch in range(epochs):
        model.train()
        total, seen = 0.0, 0
        order = rng.permutation(len(rows))
        for start in range(0, len(rows) - 1, batch_size):
            batch = np.sort(rows[order[start:start + batch_size]])
            if len(batch) < 2:
                continue
            images = read_rows(x, batch, device)
            views = [augment_batch(images, generator, "galaxy") for _ in range(2)]
            with autocast(device, config.precision):
                z = [projection(model.embed(channels_last(v))) for v in views]
            loss = contrastive_loss(z[0], z[1], temperature)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total, seen = total + loss.item() * len(batch), seen + len(batch)
        history.append({"epoch": epoch, "contrastive_loss": total / max(seen, 1)})
    model.eval()
    _CONTRASTIVE_CACHE[key] = ({k: v.detach().clone() for k, v in model.state_dict().items()}, history)
    return model, history
