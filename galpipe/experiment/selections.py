"""Label selections: which N pool galaxies to ask labels for, registered by name in
`SELECTIONS`. Each says what of the source model it needs (its probabilities, its embeddings,
one per pool galaxy); labels are read only for the chosen galaxies, and both classes are made
sure of, as a labeller asked for N examples would (`take_budget`).

- `random`: drawn at random, the same galaxies for every strategy of a seed.
- `uncertainty`: the source model's probability closest to 0.5.
- `diversity`: greedy k-centre on the source model's embeddings among the 4N most uncertain, so
  that the N are not N near-copies of one ambiguous kind of galaxy.

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
        uncertainty_order = _uncertainty_order(probability)
        candidates = uncertainty_order[:min(len(pool), 4 * budget)]
        picked = set(candidates[_k_centre(embeddings[candidates], budget,
                                          np.random.default_rng([seed, budget, 11]))].tolist())
        ranked = [i for i in candidates if i in picked] + [i for i in uncertainty_order if i not in picked]
        return take_budget(pool, ranked, budget)


SELECTIONS.register(RANDOM, RandomSelection())
SELECTIONS.register("uncertainty", UncertaintySelection())
SELECTIONS.register("diversity", DiversitySelection())


def _k_centre(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-centre: each next point the one farthest from those already picked."""
    picked = [int(rng.integers(len(points)))]
    distance = np.linalg.norm(points - points[picked[0]], axis=1)
    while len(picked) < min(k, len(points)):
        nxt = int(np.argmax(distance))
        picked.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(points - points[nxt], axis=1))
    return np.array(picked)


def select_for_labelling(pool: LabelledSample, budget: int, seed: int, selection: str,
                         probability: np.ndarray | None = None, embeddings: np.ndarray | None = None
                         ) -> LabelledSample:
    """The N pool galaxies the selection named `selection` asks labels for."""
    return SELECTIONS.get(selection).select(pool, budget, seed, probability, embeddings)
