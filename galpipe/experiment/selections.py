"""Label selections: which N pool galaxies to ask labels for, registered by name in
`SELECTIONS`. Each says what of the source model it needs (its probabilities, its embeddings,
one per pool galaxy); labels are read only for the chosen galaxies, and both classes are made
sure of, as a labeller asked for N examples would (`take_budget`).

- `random`: drawn at random, the same galaxies for every strategy of a seed.
- `uncertainty`: the source model's probability closest to 0.5.
- `diversity`: greedy k-centre on the source model's embeddings, the k-th galaxy chosen among the
  4k most uncertain, so that the N are not N near-copies of one ambiguous kind of galaxy.

Every selection ranks the pool the same way whatever the budget, so budgets are nested: the
galaxies chosen for 25 labels are among those chosen for 50.

A new selection is a subclass of `Selection`, registered as `SELECTIONS.register("name", MySelection())`.
"""

from __future__ import annotations

import numpy as np

from galpipe.registry import Registry
from galpipe.transfer import LabelledSample, choose_budget, take_budget


class Selection:
    needs_probability = False
    needs_embeddings = False

    def select(self, pool: LabelledSample, budget: int, seed: int, probability: np.ndarray | None = None,
               embeddings: np.ndarray | None = None) -> LabelledSample:
        raise NotImplementedError


SELECTIONS: Registry[Selection] = Registry("label selection")
RANDOM = "random"  # the paper's; every profile runs it, other selections only where asked


class RandomSelection(Selection):
    def select(self, pool, budget, seed, probability=None, embeddings=None):
        return choose_budget(pool, budget, seed)


def _uncertainty_order(probability: np.ndarray) -> np.ndarray:
    return np.argsort(np.abs(np.asarray(probability) - 0.5), kind="stable")


class UncertaintySelection(Selection):
    needs_probability = True

    def select(self, pool, budget, seed, probability=None, embeddings=None):
        return take_budget(pool, _uncertainty_order(probability), budget)


class DiversitySelection(Selection):
    needs_probability = needs_embeddings = True

    def select(self, pool, budget, seed, probability=None, embeddings=None):
        # The whole pool in k-centre order, so that the galaxy take_budget swaps in for a missing
        # class is the same for every budget (and budgets stay nested).
        ranked = _k_centre(embeddings, _uncertainty_order(probability), len(pool), np.random.default_rng([seed, 11]))
        return take_budget(pool, ranked, budget)


SELECTIONS.register(RANDOM, RandomSelection())
SELECTIONS.register("uncertainty", UncertaintySelection())
SELECTIONS.register("diversity", DiversitySelection())


def _k_centre(points: np.ndarray, order: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-centre along `order` (most uncertain first): the first point drawn among the 4 at the
    head of the order, each next one the farthest from those picked among the 4 x (its rank) at
    the head. The sequence does not depend on k: a smaller k gives its first points."""
    picked = [int(order[rng.integers(min(4, len(order)))])]
    distance = np.linalg.norm(points - points[picked[0]], axis=1)
    while len(picked) < min(k, len(points)):
        head = order[:min(len(order), 4 * (len(picked) + 1))]
        head = head[~np.isin(head, picked)]
        nxt = int(head[np.argmax(distance[head])])
        picked.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(points - points[nxt], axis=1))
    return np.array(picked, dtype=int)


def select_for_labelling(pool: LabelledSample, budget: int, seed: int, selection: str,
                         probability: np.ndarray | None = None, embeddings: np.ndarray | None = None
                         ) -> LabelledSample:
    """The N pool galaxies the selection named `selection` asks labels for."""
    return SELECTIONS.get(selection).select(pool, budget, seed, probability, embeddings)
