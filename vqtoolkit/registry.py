"""Typed registries filled by the plugin hooks: name -> factory, remembering which plugin gave it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from vqtoolkit.errors import VQTError, closest

SINGULAR = {
    "modalities": "modality",
    "encoders": "encoder",
    "decoders": "decoder",
    "bottlenecks": "bottleneck",
    "priors": "prior",
    "losses": "loss",
    "metrics": "metric",
    "discriminators": "discriminator",
}
KINDS = tuple(SINGULAR)


class DuplicateNameError(VQTError):
    pass


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Any
    plugin: str
    meta: dict[str, Any] = field(default_factory=dict)


class Registry:
    """One kind of component (encoders, bottlenecks, ...)."""

    def __init__(self, kind: str):
        self.kind, self.singular = kind, SINGULAR[kind]
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, factory: Any, plugin: str, **meta: Any) -> None:
        if not isinstance(name, str) or not name:
            raise VQTError(f"plugin '{plugin}' registered a {self.singular} without a name")
        if name in self._entries:
            other = self._entries[name].plugin
            raise DuplicateNameError(
                f"{self.singular} '{name}' is registered by two plugins: '{other}' and '{plugin}'"
            )
        self._entries[name] = Entry(name, factory, plugin, meta)

    def registrar(self, plugin: str) -> Callable[..., None]:
        """The `register(name, factory, **meta)` callback handed to one plugin's hook."""

        def register(name: str, factory: Any, **meta: Any) -> None:
            self.add(name, factory, plugin, **meta)

        return register

    def drop_plugin(self, plugin: str) -> None:
        """Leave out everything `plugin` registered (it failed part way)."""
        self._entries = {name: e for name, e in self._entries.items() if e.plugin != plugin}

    def entry(self, name: str, key: str | None = None) -> Entry:
        if name not in self._entries:
            where = f"{key}: " if key else ""
            raise VQTError(f"{where}unknown {self.singular} '{name}'{closest(name, self._entries)}")
        return self._entries[name]

    def get(self, name: str, key: str | None = None) -> Any:
        return self.entry(name, key).factory

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())
