"""Training a binary classifier: batches from a (memory-mapped) array, augmentation on whole
batches, Adam, early stopping on validation loss with the best weights restored, seeded, on
cpu or cuda (channels_last, mixed precision where the hardware has it: galpipe.hardware), with a
checkpoint each epoch so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galpipe.adaptation import batch_norm_layers, classify_embedding, coral_loss, embed
from galpipe.cutouts import atomic_write_bytes
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
    training_mode: str = "full"  # "full": all layers; "head_only": features frozen
    min_steps: int = 0  # small label budgets: at least this many optimiser steps in all
    # "none": plain cross-entropy (the paper's). "balanced": positives weighted by
    # n_negative/n_positive, so that a rare class (bars: 6%) is predicted at all; it costs accuracy.
    class_weighting: str = "none"
    # > 0: a CORAL loss of this weight aligns the embeddings of each labelled batch with those of a
    # batch of unlabelled rows (train_classifier's `unlabelled_rows`); galpipe.adaptation.
    alignment_weight: float = 0.0
    device: str = field(default_factory=default_device)
    # "auto": bf16 autocast where the hardware has native bf16, else fp32 (galpipe.hardware);
    # resolved on creation, so the logged parameter says what ran.
    precision: str = "auto"

    def __post_init__(self):
        self.precision = resolve_precision(self.precision, self.device)

    def as_params(self) -> dict:
        return asdict(self)


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation (+-45 deg), flips, shifts (5%) and zoom (0.75-1.3), drawn per image and
    applied to the whole batch at once with one affine_grid/grid_sample (torchvision's v2
    transforms draw one set of parameters per call, so they would need a loop per image)."""
    n = x.shape[0]
    uniform = lambda low, high: low + (high - low) * torch.rand(n, generator=generator)  # noqa: E731
    angle = uniform(-math.pi / 4, math.pi / 4)
    zoom = uniform(0.75, 1.3)
    flip_x = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    flip_y = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    shift = uniform(-0.1, 0.1), uniform(-0.1, 0.1)  # 5% of the image = 0.1 in [-1, 1] coordinates
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip_x, -sin * flip_y, shift[0]], 1),
                         torch.stack([sin * flip_x, cos * flip_y, shift[1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="zeros", align_corners=False)


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


def _tensor(x: np.ndarray, rows, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x[rows], dtype=np.float32)).to(device, non_blocking=True)


def _logits(model: nn.Module, inputs: torch.Tensor, device: str, precision: str) -> torch.Tensor:
    with autocast(device, precision):
        return model(channels_last(inputs)).float()


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
        for rows in _batches(len(y), batch_size * 4, None):
            logits = _logits(model, _tensor(x, rows, device), device, precision)
            target = torch.as_tensor(y[rows], dtype=torch.float32, device=device)
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
    out = []
    with torch.no_grad():
        for rows in _batches(len(x), batch_size, None):
            logits = _logits(prepared, _tensor(x, rows, device), device, precision)
            out.append(torch.sigmoid(logits).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def train_classifier(model: nn.Module, x, train_rows: np.ndarray, y_train: np.ndarray, val_rows: np.ndarray,
                     y_val: np.ndarray, config: TrainConfig, checkpoint_path: Path | None = None,
                     on_epoch=None, unlabelled_rows: np.ndarray | None = None) -> list[dict]:
    """Train `model` in place on x[train_rows] and keep the weights of its best validation loss.

    `x` is the whole (memory-mapped) input array; only the rows of each batch are read.
    With `config.alignment_weight`, each step also draws as many `unlabelled_rows` (target images)
    and adds the CORAL loss between the two batches' embeddings.
    Returns the history (one dict per epoch). `on_epoch(record)` is called after each epoch.
    """
    aligning = config.alignment_weight > 0
    if aligning and (unlabelled_rows is None or len(unlabelled_rows) < 2):
        raise TrainingError("alignment_weight > 0 needs unlabelled rows (at least 2) to align with")
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
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate,
                                 weight_decay=config.weight_decay)
    x_val = np.asarray(x[np.sort(val_rows)]) if len(val_rows) else None
    y_val = np.asarray(y_val)[np.argsort(val_rows)]
    history: list[dict] = []
    best = {"val_loss": math.inf, "state": None, "epoch": -1}
    start_epoch = 0
    fingerprint = _fingerprint(train_rows, y_train, val_rows, y_val, config, unlabelled_rows)
    saved = None
    if checkpoint_path and Path(checkpoint_path).is_file():
        saved = _load_checkpoint(checkpoint_path, device)
        if saved is not None and saved.get("fingerprint") != fingerprint:  # e.g. new labels changed the training set
            warnings.warn(f"{checkpoint_path}: checkpoint of a different training set or config; starting afresh")
            saved = None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        history, best, start_epoch = saved["history"], saved["best"], saved["epoch"] + 1
        rng.bit_generator.state = saved["numpy_rng"]
        generator.set_state(saved["torch_rng"])
        torch.set_rng_state(saved["global_torch_rng"])  # dropout draws from it

    steps_per_epoch = math.ceil(len(train_rows) / config.batch_size)
    max_epochs = max(config.max_epochs, math.ceil(config.min_steps / steps_per_epoch))
    for epoch in range(start_epoch, max_epochs):
        epoch_started = time.perf_counter()
        _train_mode(model, config.training_mode)
        if aligning:  # batch norm frozen at the source's statistics: both surveys normalised alike
            for norm in batch_norm_layers(model):  # in training and evaluation, so the loss must align them
                norm.eval()
        train_loss, seen = 0.0, 0
        for batch in _batches(len(train_rows), config.batch_size, rng):
            rows = train_rows[batch]
            order = np.argsort(rows)
            inputs = _tensor(x, rows[order], device)
            target = torch.as_tensor(np.asarray(y_train)[batch][order], dtype=torch.float32, device=device)
            if config.augment:
                inputs = augment_batch(inputs, generator)
            if aligning:
                drawn = np.sort(rng.choice(unlabelled_rows, len(rows), replace=len(unlabelled_rows) < len(rows)))
                unlabelled = _tensor(x, drawn, device)
                unlabelled = augment_batch(unlabelled, generator) if config.augment else unlabelled
                with autocast(device, config.precision):
                    embedding = embed(model, channels_last(torch.cat([inputs, unlabelled])))
                    logits = classify_embedding(model, embedding[:len(rows)]).float()
                    alignment = coral_loss(embedding[:len(rows)], embedding[len(rows):])
                loss = (F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
                        + config.alignment_weight * alignment)
            else:
                logits = _logits(model, inputs, device, config.precision)
                loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at epoch {epoch} "
                                    f"(learning rate {config.learning_rate:g}): training diverged")
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
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
        if checkpoint_path:  # before the callback: whatever happens next, this epoch is kept
            _save_checkpoint(checkpoint_path, model, optimiser, history, best, epoch, rng, generator, fingerprint)
        if on_epoch:
            on_epoch(record)
        if epoch - best["epoch"] >= config.patience and epoch + 1 >= config.min_steps / steps_per_epoch:
            break
    model.load_state_dict(best["state"])
    if checkpoint_path:
        Path(checkpoint_path).unlink(missing_ok=True)  # finished: nothing to resume
    return history


def _fingerprint(train_rows, y_train, val_rows, y_val, config: TrainConfig, unlabelled_rows=None) -> str:
    """What a checkpoint was trained on: resuming is only right for the same galaxies and settings."""
    digest = hashlib.sha256(repr(sorted(config.as_params().items())).encode())
    for array in (train_rows, y_train, val_rows, y_val, [] if unlabelled_rows is None else unlabelled_rows):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _load_checkpoint(path, device) -> dict | None:
    """A checkpoint's contents, read with torch's weights-only unpickler: tensors, numbers and
    strings only, so a planted file cannot run code. Unreadable: None (training starts afresh)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # a damaged file or one holding more than weights: both are skipped
        warnings.warn(f"{path}: checkpoint not loaded ({type(err).__name__}: {str(err)[:200]}); starting afresh")
        return None


def _save_checkpoint(path, model, optimiser, history, best, epoch, rng, generator, fingerprint) -> None:
    state = {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "history": history,
             "best": best, "epoch": epoch, "numpy_rng": rng.bit_generator.state,
             "torch_rng": generator.get_state(), "global_torch_rng": torch.get_rng_state(),
             "fingerprint": fingerprint}
    # A temporary name of its own: two runs of the same partition never write the same file.
    atomic_write_bytes(Path(path), lambda tmp: torch.save(state, tmp))
