"""Name -> object registries, filled by decorators, so the harness never branches on names."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
BUILTIN = ("baselines", "neulite")  # the packages whose modules register the built-in methods


def plugin_names() -> list[str]:
    """The modules named in ``FL_HARNESS_PLUGINS``, which register a user's own methods (imported by
    ``harness.plugins``; named here, at the floor, for what records the code a run ran)."""
    return [m.strip() for m in os.environ.get("FL_HARNESS_PLUGINS", "").split(",") if m.strip()]


class UnknownNameError(KeyError):
    """A name that no registry entry has; the message lists the allowed names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """A small named table: ``@registry.register("name")`` adds, ``registry["name"]`` looks up. It is
    declared at the floor and filled by the modules that define its entries; an entry point imports
    those (``harness.suites``, ``harness.plugins``), never the table itself."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; allowed: {', '.join(sorted(self._entries))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)
