"""Training a binary classifier: batches from a (memory-mapped) array, augmentation on whole
batches, Adam (or AdamW on a one-cycle schedule), early stopping on validation loss with the best
weights restored, seeded, on cpu or cuda (channels_last, mixed precision where the hardware has
it: galpipe.hardware), with a checkpoint every 30 s or so (after the epoch that passes it) so an
interrupted run resumes near where it stopped. The loss of a batch is an
`Objective`: cross-entropy on the labels unless a strategy brings its own (galpipe.adaptation).
One batched reader (`image_batches`) serves training, inference and the adaptation strategies.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galpipe.files import atomic_write
from galpipe.hardware import autocast, channels_last, default_device, inference_model, resolve_precision


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, a single class); the message says where."""


@dataclass
class TrainConfig:
    max_epochs: int = 50
    patience: int = 10  # epochs without a better validation loss before stopping
    batch_size: int = 30
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    augment: bool = True
    # "affine": rotation (+-45 deg), flips, shifts, zoom. "galaxy": a galaxy has no up, so any
    # rotation; and per-band gain and noise jitter, as seeing, calibration and depth vary.
    # "survey": "galaxy"'s turns, then the survey randomised instead of its mild jitter (seeing
    # blur, stretch, colour balance, depth), for a source rendered unlike the target (domain
    # randomisation).
    augmentation: str = "affine"
    # "constant": Adam at learning_rate (the paper's), early stopping after `patience` epochs.
    # "one_cycle": AdamW with the learning rate rising to learning_rate and annealed to ~0 over
    # max_epochs (Smith 2018), all of them run.
    schedule: str = "constant"
    training_mode: str = "full"  # "full": all layers; "head_only": features frozen
    min_steps: int = 0  # small label budgets: at least this many optimiser steps in all
    # "none": plain cross-entropy (the paper's). "balanced": positives weighted by
    # n_negative/n_positive, so that a rare class (bars: 6%) is predicted at all; it costs accuracy.
    class_weighting: str = "none"
    device: str = field(default_factory=default_device)
    # "auto": bf16 autocast where the hardware has native bf16, else fp32 (galpipe.hardware);
    # resolved on creation, so the logged parameter says what ran.
    precision: str = "auto"

    def __post_init__(self):
        self.precision = resolve_precision(self.precision, self.device)

    def as_params(self) -> dict:
        return asdict(self)


AUGMENTATIONS = ("affine", "galaxy", "survey")
SCHEDULES = ("constant", "one_cycle")


def augment_batch(x: torch.Tensor, generator: torch.Generator, augmentation: str = "affine") -> torch.Tensor:
    """Random rotation (+-45 deg, or any angle for "galaxy" and "survey"), flips, shifts (5%) and zoom (0.75-1.3),
    drawn per image and applied to the whole batch at once with one affine_grid/grid_sample
    (torchvision's v2 transforms draw one set of parameters per call, so they would need a loop per
    image). "galaxy" then scales each band by 0.9-1.1 and adds Gaussian noise of up to 5% of the
    image's standard deviation. "survey" randomises the survey instead (see survey_randomised)."""
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augmentation!r}; known: {AUGMENTATIONS}")
    n = x.shape[0]
    uniform = lambda low, high: low + (high - low) * torch.rand(n, generator=generator)  # noqa: E731
    any_angle = augmentation in ("galaxy", "survey")
    angle = uniform(-math.pi, math.pi) if any_angle else uniform(-math.pi / 4, math.pi / 4)
    zoom = uniform(0.75, 1.3)
    flip_x = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    flip_y = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    shift = uniform(-0.1, 0.1), uniform(-0.1, 0.1)  # 5% of the image = 0.1 in [-1, 1] coordinates
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip_x, -sin * flip_y, shift[0]], 1),
                         torch.stack([sin * flip_x, cos * flip_y, shift[1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="zeros", align_corners=False)
    if augmentation == "galaxy":
        gain = 0.9 + 0.2 * torch.rand(n, x.shape[1], 1, 1, generator=generator)
        noise = torch.randn(x.shape, generator=generator) * uniform(0, 0.05).view(n, 1, 1, 1)
        x = x * gain.to(x.device) + noise.to(x.device) * x.std(dim=(1, 2, 3), keepdim=True)
    elif augmentation == "survey":
        x = survey_randomised(x, generator)
    return x


# Ranges of survey_randomised, chosen wide before looking at any real image's statistics.
SURVEY_BLUR_SIGMA_PIXELS = (0.0, 1.5)  # seeing: a Gaussian of this sigma on top of the image's own
SURVEY_STRETCH_POWER = (0.6, 1.6)  # |x| ** p, log-uniform: linear, asinh-like or harder stretches
SURVEY_BAND_GAIN = (1 / 1.5, 1.5)  # per band, log-uniform: another colour balance or filter set
SURVEY_NOISE_FRACTION = (0.0, 0.15)  # Gaussian noise, as a fraction of the image's standard deviation


def survey_randomised(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image as another survey might have made it: blurred by extra seeing, stretched by a
    power, its bands scaled apart and noise added, each drawn per image. Meant for a simulated
    source, so that a network cannot lean on the simulation's own PSF, stretch, colours or depth."""
    n, bands = x.shape[:2]
    draw = lambda low, high, *shape: low + (high - low) * torch.rand(n, *shape, generator=generator)  # noqa: E731
    log_draw = lambda low, high, *shape: torch.exp(draw(math.log(low), math.log(high), *shape))  # noqa: E731
    sigma = draw(*SURVEY_BLUR_SIGMA_PIXELS)
    radius = math.ceil(3 * SURVEY_BLUR_SIGMA_PIXELS[1])
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    profile = torch.exp(-0.5 * (offsets / sigma.clamp(min=1e-3).view(n, 1)) ** 2)
    profile = (profile / profile.sum(1, keepdim=True)).to(x.dtype).to(x.device)  # sigma 0: a delta
    # One separable Gaussian per image, as a grouped convolution over (image, band) planes.
    planes = x.reshape(1, n * bands, *x.shape[2:])
    rows = profile.repeat_interleave(bands, 0).view(n * bands, 1, 1, -1)
    planes = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="replicate"), rows, groups=n * bands)
    planes = F.conv2d(F.pad(planes, (0, 0, radius, radius), mode="replicate"), rows.transpose(2, 3), groups=n * bands)
    x = planes.view_as(x)
    power = log_draw(*SURVEY_STRETCH_POWER).view(n, 1, 1, 1).to(x.dtype).to(x.device)
    x = x.sign() * x.abs().pow(power)
    x = x * log_draw(*SURVEY_BAND_GAIN, bands, 1, 1).to(x.dtype).to(x.device)
    noise = torch.randn(x.shape, generator=generator) * draw(*SURVEY_NOISE_FRACTION).view(n, 1, 1, 1)
    return x + noise.to(x.dtype).to(x.device) * x.std(dim=(1, 2, 3), keepdim=True)


def set_training_mode(model: nn.Module, training_mode: str) -> None:
    if training_mode not in ("full", "head_only"):
        raise ValueError(f"unknown training_mode {training_mode!r} (full or head_only)")
    for p in model.features.parameters():
        p.requires_grad = training_mode == "full"


def _train_mode(model: nn.Module, training_mode: str) -> None:
    model.train()
    if training_mode == "head_only":
        model.features.eval()  # frozen features keep their batch-norm statistics too


def _batches(n: int, batch_size: int, rng: np.random.Generator | None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield np.sort(order[start:start + batch_size])  # sorted: contiguous reads from a memmap


def read_rows(x, rows, device) -> torch.Tensor:
    """x[rows] as a float32 tensor on `device` (rows in increasing order read a memmap sequentially)."""
    return torch.from_numpy(np.ascontiguousarray(x[rows], dtype=np.float32)).to(device, non_blocking=True)


def image_batches(x, rows=None, batch_size: int = 64, device: str = "cpu"
                  ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(positions, images) for x[rows] (all of x by default) in batches, read in increasing row
    order; `positions` say where each image's row stands in `rows`, to put results back in order."""
    rows = np.arange(len(x)) if rows is None else np.asarray(rows)
    order = np.argsort(rows, kind="stable")
    # Consecutive rows of a writable array in memory (a batch being predicted) are sliced, not gathered into a copy:
    # channels_last then makes the one copy needed, as it always copies an NCHW image stack with several
    # channels and pixels (a read-only memmap's view would go to torch unwritable).
    sliceable = (isinstance(x, np.ndarray) and not isinstance(x, np.memmap) and x.flags.writeable and x.ndim == 4
                 and x.shape[1] > 1 and x.shape[2] * x.shape[3] > 1)
    for start in range(0, len(rows), batch_size):
        positions = order[start:start + batch_size]
        batch = rows[positions]
        if sliceable and len(batch) and 0 <= batch[0] and batch[-1] < len(x) and (np.diff(batch) == 1).all():
            batch = slice(batch[0], batch[-1] + 1)
        yield positions, channels_last(read_rows(x, batch, device))


def _logits(model: nn.Module, inputs: torch.Tensor, device: str, precision: str) -> torch.Tensor:
    with autocast(device, precision):
        return model(channels_last(inputs)).float()


@dataclass
class Step:
    """What an objective may use for one batch: the whole input array, the run's random
    generators (so extra draws stay reproducible and resumable), and the numeric settings."""

    x: object
    rng: np.random.Generator
    generator: torch.Generator
    device: str
    precision: str
    augment: bool
    pos_weight: torch.Tensor
    augmentation: str = "affine"


class Objective:
    """The loss of a training batch. This one, the paper's: binary cross-entropy on the labels."""

    def params(self) -> dict:
        """What to log of it (and what a checkpoint must agree on)."""
        return {}

    def fingerprint_arrays(self) -> list:
        return []

    def start_epoch(self, model: nn.Module) -> None:
        """Called after the model is put in training mode, each epoch."""

    def loss(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, step: Step) -> torch.Tensor:
        logits = _logits(model, inputs, step.device, step.precision)
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=step.pos_weight)


def positive_weight(y_train: np.ndarray, class_weighting: str) -> float:
    """Weight of the positive class in the loss: the negatives per positive when balanced."""
    if class_weighting == "none":
        return 1.0
    if class_weighting != "balanced":
        raise ValueError(f"unknown class_weighting {class_weighting!r} (balanced or none)")
    n_positive = int(np.sum(y_train))
    return (len(y_train) - n_positive) / n_positive


def evaluate_loss(model: nn.Module, x, y: np.ndarray, batch_size: int, device: str,
                  pos_weight: float = 1.0, precision: str = "fp32") -> float:
    model.eval()
    weight = torch.tensor(pos_weight, device=device)
    total = 0.0
    with torch.no_grad():
        for positions, images in image_batches(x, None, batch_size * 4, device):
            logits = _logits(model, images, device, precision)
            target = torch.as_tensor(y[positions], dtype=torch.float32, device=device)
            total += F.binary_cross_entropy_with_logits(logits, target, reduction="sum", pos_weight=weight).item()
    return total / max(len(y), 1)


def predict_proba(model: nn.Module, x, batch_size: int = 64, device: str | None = None,
                  precision: str = "fp32", prepare: bool = True) -> np.ndarray:
    """p(class 1) for every row of `x`, with a copy of the model prepared for inference (batch
    norm folded, channels_last; `prepare=False` when `model` came from `inference_model`
    already). Batches of 64 stay in cache (faster than 256 or 1024 here).

    fp32 whatever the training used: bf16 keeps 8 bits of mantissa, so probabilities would come
    in steps of ~0.004 near 0.5 (an untrained model gave one value for 470 galaxies), which
    ruins ROC curves, thresholds and uncertainty ranking. `precision` is for benchmarks."""
    device = device or next(model.parameters()).device.type
    precision = resolve_precision(precision, device)
    prepared = inference_model(model, device) if prepare else model
    out = np.zeros(len(x), np.float32)
    with torch.no_grad():
        for positions, images in image_batches(x, None, batch_size, device):
            out[positions] = torch.sigmoid(_logits(prepared, images, device, precision)).cpu().numpy()
    return out


# A checkpoint is written after an epoch only when this long has passed since training started or
# since the last one: a crash loses at most this much training and one epoch. One after every epoch (4 ms each for
# `compact`) was 17% of a `small` fine-tuning partition of 25 labels, whose runs train for under a second.
CHECKPOINT_EVERY_SECONDS = 30.0


def train_classifier(model: nn.Module, x, train_rows: np.ndarray, y_train: np.ndarray, val_rows: np.ndarray,
                     y_val: np.ndarray, config: TrainConfig, checkpoint_path: Path | None = None,
                     on_epoch=None, objective: Objective | None = None,
                     checkpoint_every_s: float = CHECKPOINT_EVERY_SECONDS) -> list[dict]:
    """Train `model` in place on x[train_rows] and keep the weights of its best validation loss.

    `x` is the whole (memory-mapped) input array; only the rows of each batch are read.
    `objective` gives each batch's loss (default: cross-entropy on the labels).
    Returns the history (one dict per epoch). `on_epoch(record)` is called after each epoch.
    With `checkpoint_path`, training resumes from a checkpoint there, and writes one after an
    epoch once `checkpoint_every_s` have passed since the last (0: after every epoch).
    """
    objective = objective or Objective()
    if len(np.unique(y_train)) < 2:
        raise TrainingError(f"the training labels hold a single class ({np.unique(y_train).tolist()}): "
                            "a classifier cannot learn from them")
    if len(val_rows) == 0:
        raise TrainingError("no validation galaxies: early stopping needs at least one")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = config.device
    pos_weight = positive_weight(y_train, config.class_weighting)
    weight = torch.tensor(pos_weight, device=device)
    model.to(device).to(memory_format=torch.channels_last)
    set_training_mode(model, config.training_mode)
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=config.precision == "fp16")
    if config.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {config.schedule!r}; known: {SCHEDULES}")
    steps_per_epoch = math.ceil(len(train_rows) / config.batch_size)
    max_epochs = max(config.max_epochs, math.ceil(config.min_steps / steps_per_epoch))
    trained = [p for p in model.parameters() if p.requires_grad]
    if config.schedule == "one_cycle":
        optimiser = torch.optim.AdamW(trained, lr=config.learning_rate, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.learning_rate,
                                                        total_steps=max_epochs * steps_per_epoch)
    else:
        optimiser = torch.optim.Adam(trained, lr=config.learning_rate, weight_decay=config.weight_decay)
        scheduler = None
    x_val = np.asarray(x[np.sort(val_rows)]) if len(val_rows) else None
    y_val = np.asarray(y_val)[np.argsort(val_rows)]
    history: list[dict] = []
    best = {"val_loss": math.inf, "state": None, "epoch": -1}
    start_epoch = 0
    fingerprint = _fingerprint(x, train_rows, y_train, val_rows, y_val, config, objective)
    saved = None
    if checkpoint_path and Path(checkpoint_path).is_file():
        saved = _load_checkpoint(checkpoint_path, device)
        if saved is not None and saved.get("fingerprint") != fingerprint:  # e.g. new labels changed the training set
            warnings.warn(f"{checkpoint_path}: checkpoint of a different training set or config; starting afresh")
            saved = None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        history, best, start_epoch = saved["history"], saved["best"], saved["epoch"] + 1
        rng.bit_generator.state = saved["numpy_rng"]
        generator.set_state(saved["torch_rng"])
        torch.set_rng_state(saved["global_torch_rng"])  # dropout draws from it

    step = Step(x, rng, generator, device, config.precision, config.augment, weight, config.augmentation)
    last_checkpoint = time.perf_counter()
    for epoch in range(start_epoch, max_epochs):
        epoch_started = time.perf_counter()
        _train_mode(model, config.training_mode)
        objective.start_epoch(model)
        train_loss, seen = 0.0, 0
        for batch in _batches(len(train_rows), config.batch_size, rng):
            rows = train_rows[batch]
            order = np.argsort(rows)
            inputs = read_rows(x, rows[order], device)
            target = torch.as_tensor(np.asarray(y_train)[batch][order], dtype=torch.float32, device=device)
            if config.augment:
                inputs = augment_batch(inputs, generator, config.augmentation)
            loss = objective.loss(model, inputs, target, step)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at epoch {epoch} "
                                    f"(learning rate {config.learning_rate:g}): training diverged")
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            train_loss += loss.item() * len(rows)
            seen += len(rows)
        # fp32, like all inference: early stopping and the champion compare these numbers.
        val_loss = evaluate_loss(model, x_val, y_val, config.batch_size, device, pos_weight)
        record = {"epoch": epoch, "train_loss": train_loss / seen, "val_loss": val_loss,
                  "seconds": time.perf_counter() - epoch_started, "images": seen}
        history.append(record)
        if val_loss < best["val_loss"]:
            best = {"val_loss": val_loss, "epoch": epoch,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        if checkpoint_path and time.perf_counter() - last_checkpoint >= checkpoint_every_s:
            # Before the callback: whatever happens next, an epoch that was saved is kept.
            _save_checkpoint(checkpoint_path, model, optimiser, scheduler, history, best, epoch, rng, generator,
                             fingerprint)
            last_checkpoint = time.perf_counter()
        if on_epoch:
            on_epoch(record)
        # A one-cycle schedule runs to its end (stopping at its peak rate would keep a model of the
        # noisiest steps); the best validation loss still picks the weights kept.
        stoppable = scheduler is None and epoch + 1 >= config.min_steps / steps_per_epoch
        if stoppable and epoch - best["epoch"] >= config.patience:
            break
    model.load_state_dict(best["state"])
    if checkpoint_path:
        Path(checkpoint_path).unlink(missing_ok=True)  # finished: nothing to resume
    return history


FINGERPRINT_IMAGES = 64  # of the training and validation rows: enough to see a new frame or rendering


def _fingerprint(x, train_rows, y_train, val_rows, y_val, config: TrainConfig, objective: Objective) -> str:
    """What a checkpoint was trained on: resuming is only right for the same galaxies, images and
    settings. The pixels of the first images are in it, so a project that now frames or renders
    its galaxies differently (the same rows, other inputs) starts afresh."""
    settings = {**config.as_params(), **{f"objective.{k}": v for k, v in objective.params().items()}}
    digest = hashlib.sha256(repr(sorted(settings.items())).encode())
    for array in (train_rows, y_train, val_rows, y_val, *objective.fingerprint_arrays()):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    for rows in (train_rows, val_rows):
        digest.update(np.ascontiguousarray(x[np.sort(rows[:FINGERPRINT_IMAGES])], dtype=np.float32).tobytes())
    return digest.hexdigest()


def _load_checkpoint(path, device) -> dict | None:
    """A checkpoint's contents, read with torch's weights-only unpickler: tensors, numbers and
    strings only, so a planted file cannot run code. Unreadable: None (training starts afresh)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # a damaged file or one holding more than weights: both are skipped
        warnings.warn(f"{path}: checkpoint not loaded ({type(err).__name__}: {str(err)[:200]}); starting afresh")
        return None


def _save_checkpoint(path, model, optimiser, scheduler, history, best, epoch, rng, generator, fingerprint) -> None:
    state = {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "history": history,
             "scheduler": scheduler.state_dict() if scheduler is not None else {},
             "best": best, "epoch": epoch, "numpy_rng": rng.bit_generator.state,
             "torch_rng": generator.get_state(), "global_torch_rng": torch.get_rng_state(),
             "fingerprint": fingerprint}
    # A temporary name of its own: two runs of the same partition never write the same file.
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))
