"""The classification tasks: each a binary question whose 0/1 label column bears its name. This
is the one place that defines them: the registry `TASKS` says what each asks and whether the
simulated sky labels it, and `DEFAULT_TASKS` are those a run classifies unless told otherwise
(the `settings` resource's `tasks`); the partitions, the simulation and the CLI read from here."""

from __future__ import annotations

from dataclasses import dataclass

from galpipe.registry import Registry


@dataclass(frozen=True)
class Task:
    question: str
    simulated: bool = False  # the simulated sky provides volunteer labels for it


TASKS: Registry[Task] = Registry("task")
TASKS.register("featured", Task("features or a disk, against smooth", simulated=True))
TASKS.register("edge_on", Task("a disk seen edge-on", simulated=True))
TASKS.register("bar", Task("a bar", simulated=True))
TASKS.register("ring", Task("a ring (the real DECaLS sample in ../shared/data)"))
# Registered after the others: the simulation draws its labels in this order, so theirs stay as they were.
TASKS.register("spiral", Task("spiral arms (the real Galaxy Zoo 2 sample in ../shared/data)", simulated=True))

DEFAULT_TASKS = ("featured", "edge_on", "bar")


def simulated_tasks() -> tuple[str, ...]:
    return tuple(name for name in TASKS if TASKS.get(name).simulated)
