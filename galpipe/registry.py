"""One small registry for everything galpipe grows by name (architectures, fine-tuning
strategies, label selections, survey source kinds, tasks), in the spirit of timm's
`register_model`/`create_model`/`list_models`: a new one is one class plus its registration."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # what an entry is, for messages: "architecture", "label selection", ...
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None) -> T | Callable[[T], T]:
        """`registry.register("name", entry)`, or `@registry.register("name")` on a class or function."""
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add(entry) if entry is not None else add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {self.names()}") from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
