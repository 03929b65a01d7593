"""Registry: maps a config discriminator (a source or sink `type`, a model `backend`) to the class
that implements it, imported lazily by name.

Lazy import keeps optional dependencies optional: a CPU machine never imports TensorRT, and a run
without a ZeroMQ sink never imports pyzmq's socket code. The graph builder asks a registry for a
class and calls its `from_config`; it never branches on config types itself.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(LookupError):
    """A name has no entry, or its entry cannot be imported. The message says which and why."""


class Registry(Generic[T]):
    """Names to implementing classes, each given as `"package.module:ClassName"` (imported on first
    use) or as the class itself.

    Args:
        kind: what the entries are, for messages ("source", "sink", "backend").
        entries: name -> "module:Class" or class.

    Example:
        >>> SINKS = Registry("sink", {"jsonl": "pipeline.sinks.jsonl:JsonlSink"})
        >>> SINKS.get("jsonl").__name__
        'JsonlSink'
    """

    def __init__(self, kind: str, entries: dict[str, str | type[T]] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, str | type[T]] = dict(entries or {})

    def register(self, name: str, target: str | type[T]) -> None:
        """Adds (or replaces) the class for `name`.

        Args:
            name: the config discriminator value, e.g. `"mqtt"`.
            target: the class, or `"package.module:ClassName"` to import it on first use.
        """
        if isinstance(target, str) and ":" not in target:
            raise ValueError(f"{self.kind} {name!r}: expected 'package.module:ClassName', got {target!r}")
        self._entries[name] = target

    def unregister(self, name: str) -> None:
        """Removes `name` (tests that registered a class of their own)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> type[T]:
        """The class registered for `name`, imported now if it was given by name.

        Raises:
            RegistryError: no such name (with a "did you mean"), or its module cannot be imported
                (with the import error, e.g. the package to install).
        """
        target = self._entries.get(name)
        if target is None:
            close = difflib.get_close_matches(name, list(self._entries), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RegistryError(f"unknown {self.kind} {name!r}{hint}; known: {', '.join(self._entries)}")
        if not isinstance(target, str):
            return target
        module_name, _, class_name = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise RegistryError(f"{self.kind} {name!r} is not available: {exc}") from exc
        cls = getattr(module, class_name, None)
        if cls is None:
            raise RegistryError(f"{self.kind} {name!r}: {module_name} has no {class_name}")
        return cls

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
