"""Named plug-ins (strategies, update stages, tasks, models): one file registers itself by name, so
adding one touches nothing else, and user code can register its own the same way.

A registry finds the built-in entries by importing every module of its package on the first
lookup, so the config schema never lists them by hand.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, Iterator, TypeVar

Entry = TypeVar("Entry")


class Registry(Generic[Entry]):
    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind  # "strategy", "stage", ...: used in error messages
        self._package = package  # where the built-in entries live, imported on first use
        self._entries: dict[str, Entry] = {}
        self._discovered = package is None

    def register(self, name: str, entry: Entry) -> None:
        """Add `entry` under `name`. Registering the same-named class again from the same module
        (a re-run notebook cell, a reloaded module) replaces it; another module's is refused."""
        known = self._entries.get(name)
        if known is not None and _origin(known) != _origin(entry):
            raise ValueError(f"{self.kind} {name!r} is already registered by {_origin(known)}")
        self._entries[name] = entry

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self._package)  # type: ignore[arg-type]
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self._package}.{module.name}")

    def get(self, name: str) -> Entry | None:
        self._discover()
        return self._entries.get(name)

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def __iter__(self) -> Iterator[tuple[str, Entry]]:
        self._discover()
        return iter(sorted(self._entries.items()))


def _origin(entry: object) -> str:
    return f"{getattr(entry, '__module__', '?')}.{getattr(entry, '__qualname__', type(entry).__qualname__)}"
