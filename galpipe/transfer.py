"""Labelled samples and label budgets: the galaxies of a task with a label and a model input,
fixed hash splits, the N galaxies of a budget (both classes made sure of) and their
train/validation split. The protocol that uses them is galpipe.experiment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from galpipe.matching import assign_split

FULL_POOL = "full"


class BudgetError(ValueError):
    """A label budget the labelled pool cannot supply."""


@dataclass
class LabelledSample:
    """Galaxies with a label for one task and a row in the model-input array."""

    object_id: np.ndarray
    row: np.ndarray
    label: np.ndarray

    def subset(self, mask_or_index) -> "LabelledSample":
        return LabelledSample(self.object_id[mask_or_index], self.row[mask_or_index], self.label[mask_or_index])

    def __len__(self) -> int:
        return len(self.row)


def labelled_sample(catalog: pd.DataFrame, inputs_index: pd.DataFrame, task: str) -> LabelledSample:
    """Rows of `catalog` with a `task` label and a good model input."""
    if task not in catalog:
        raise KeyError(f"the catalogue has no label column {task!r}; columns: {list(catalog.columns)}")
    good = inputs_index[inputs_index.status == "ok"][["object_id", "row"]]
    table = catalog[catalog[task].notna()][["object_id", task]].merge(good, on="object_id")
    return LabelledSample(table.object_id.to_numpy(), table.row.to_numpy(), table[task].astype(int).to_numpy())


def split_by_hash(sample: LabelledSample, fraction: float, salt: str) -> tuple[LabelledSample, LabelledSample]:
    """(rest, held-out) with a fixed fraction held out, by object id (stable across runs)."""
    held = (assign_split(pd.Series(sample.object_id), fraction, salt) == "test").to_numpy()
    return sample.subset(~held), sample.subset(held)


def require_two_classes(sample: LabelledSample, what: str) -> None:
    classes = np.unique(sample.label)
    if len(classes) < 2:
        raise ValueError(f"{what}: all {len(sample)} galaxies have label {classes.tolist()}; "
                         "a binary classifier needs both classes")


def choose_budget(pool: LabelledSample, budget: int, seed: int) -> LabelledSample:
    """`budget` galaxies drawn at random from the pool, at least one of each class (a labeller
    asked for N examples would make sure both answers occur). The same seed gives the same
    galaxies, whatever strategy is trained on them, and budgets are nested: one random order per
    seed, of which each budget takes the first N (the 25 are among the 50)."""
    return take_budget(pool, np.random.default_rng([seed, 5]).permutation(len(pool)), budget)


def take_budget(pool: LabelledSample, ranking, budget: int) -> LabelledSample:
    """The first `budget` pool galaxies of `ranking` (indices into the pool), with at least one of
    each class: where a class is missing, its first galaxy further down the ranking replaces the
    last chosen one."""
    if budget > len(pool):
        raise BudgetError(f"label budget {budget} exceeds the labelled pool of {len(pool)} target galaxies")
    require_two_classes(pool, "labelled pool")
    ranking = list(ranking)
    chosen = ranking[:budget]
    for cls in (0, 1):  # swap in one galaxy of a missing class
        if budget >= 2 and not (pool.label[chosen] == cls).any():
            candidate = next(i for i in ranking[budget:] if pool.label[i] == cls)
            majority = [k for k, i in enumerate(chosen) if pool.label[i] != cls]
            chosen[majority[-1]] = candidate
    return pool.subset(np.array(sorted(chosen)))


def split_train_validation(sample: LabelledSample, seed: int, validation_fraction: float = 0.2
                           ) -> tuple[LabelledSample, LabelledSample]:
    """Stratified split of the budget's galaxies: the N labels are all there is, so early
    stopping must be validated on some of them. Each class keeps at least one training galaxy."""
    rng = np.random.default_rng([seed, 7])
    validation = []
    for cls in (0, 1):
        members = np.flatnonzero(sample.label == cls)
        n_val = min(int(round(validation_fraction * len(members))), len(members) - 1)
        validation += list(rng.choice(members, max(n_val, 0), replace=False))
    is_val = np.zeros(len(sample), bool)
    is_val[validation] = True
    if not is_val.any():  # tiny budgets: validate on one training galaxy rather than none
        is_val[rng.integers(len(sample))] = True
        return sample, sample.subset(is_val)
    return sample.subset(~is_val), sample.subset(is_val)


def parse_budget(key: str, pool_size: int) -> int:
    return pool_size if key == FULL_POOL else int(key)
