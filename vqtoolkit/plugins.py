"""The one plugin manager. Built-ins register through the same hooks as third-party packages."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from functools import cache

import pluggy

from vqtoolkit import hookspecs
from vqtoolkit.registry import KINDS, DuplicateNameError, Registry

DISTRIBUTION = "vqtoolkit"  # the built-ins are this distribution's own `vqtoolkit` entry points

pm = pluggy.PluginManager("vqtoolkit")
pm.add_hookspecs(hookspecs)
failed_plugins: dict[str, str] = {}  # plugin name -> why it did not load
builtin_plugins: set[str] = set()  # the names of the entry points the toolkit itself declares
_loaded = False


def _entry_points() -> list[tuple[str, importlib.metadata.EntryPoint]]:
    """(distribution name, entry point) of every `vqtoolkit` entry point, the toolkit's own first."""
    found = [
        (dist.metadata["name"], ep)
        for dist in importlib.metadata.distributions()
        for ep in dist.entry_points
        if ep.group == "vqtoolkit"
    ]
    return sorted(found, key=lambda item: item[0] != DISTRIBUTION)


def load_plugins(builtins: bool = True) -> None:
    """Register the built-ins (the toolkit's own entry points), then every other `vqtoolkit` entry point
    (unless autoload is disabled). Both go through the same hooks. With `builtins` false (shell
    completion), only the built-ins inside the vqtoolkit package load: they import torch only when their
    hooks run."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    autoload = os.environ.get("VQT_DISABLE_PLUGIN_AUTOLOAD") != "1"
    allow = {n.strip() for n in os.environ.get("VQT_LOAD_PLUGINS", "").split(",") if n.strip()}
    entry_points = _entry_points()
    builtin_plugins.update(ep.name for dist, ep in entry_points if dist == DISTRIBUTION)
    # pm.load_setuptools_entrypoints("vqtoolkit") stops at the first plugin that fails to import;
    # this loop does the same work one entry point at a time so one broken plugin can't hide the rest.
    for dist, ep in entry_points:
        builtin = ep.name in builtin_plugins
        light = builtin and ep.value.startswith(f"{DISTRIBUTION}.")
        if (builtin and not builtins and not light) or (not builtin and not autoload):
            continue
        if pm.get_plugin(ep.name) or pm.is_blocked(ep.name):
            continue
        if not builtin and allow and ep.name not in allow and dist not in allow:
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # noqa: BLE001 - any import error is reported, not raised
            failed_plugins[ep.name] = f"{type(exc).__name__}: {exc}"
    for name, why in failed_plugins.items():
        print(f"warning: plugin '{name}' failed to load: {why}", file=sys.stderr)
    known = {dist for dist, _ in entry_points} | {ep.name for _, ep in entry_points}
    for name in sorted(allow - known):
        print(
            f"warning: VQT_LOAD_PLUGINS names '{name}', which is not an installed vqtoolkit plugin",
            file=sys.stderr,
        )


def plugin_listing(builtins: bool = False) -> list[dict]:
    """What `vqt plugins` shows: per loaded plugin {"name", "builtin", "registered": {kind: [names]}}, then
    {"name", "error"} for each that failed to load or was left out. Built-ins only with `builtins`."""
    regs = registries()  # first: a plugin whose hook raises is left out there
    listing = {name: {} for name in plugin_names(builtins=builtins) if name not in failed_plugins}
    for kind, registry in regs.items():
        for entry in registry:
            if entry.plugin in listing:
                listing[entry.plugin].setdefault(kind, []).append(entry.name)
    rows = [
        {"name": name, "builtin": name in builtin_plugins, "registered": registered}
        for name, registered in listing.items()
    ]
    return rows + [{"name": name, "error": why} for name, why in failed_plugins.items()]


def plugin_names(builtins: bool = True) -> list[str]:
    load_plugins()
    return [name for name, _ in pm.list_name_plugin() if builtins or name not in builtin_plugins]


@cache
def registries() -> dict[str, Registry]:
    """Call every `register_<kind>` hook once, one plugin at a time so each entry knows its plugin."""
    load_plugins()
    regs = {kind: Registry(kind) for kind in KINDS}
    broken: dict[str, str] = {}
    for kind, registry in regs.items():
        for impl in getattr(pm.hook, f"register_{kind}").get_hookimpls():
            if impl.plugin_name in broken:
                continue
            try:
                impl.function(register=registry.registrar(impl.plugin_name))
            except DuplicateNameError:
                raise  # two plugins claim one name: the user must choose (VQT_LOAD_PLUGINS)
            except Exception as exc:  # noqa: BLE001 - a plugin's bug leaves that plugin out, not the toolkit
                broken[impl.plugin_name] = (
                    f"its register_{kind} hook raised {type(exc).__name__}: {first_line(exc)}"
                )
    for name, why in broken.items():
        for registry in regs.values():
            registry.drop_plugin(name)
        failed_plugins[name] = why
        print(f"warning: plugin '{name}' left out: {why}", file=sys.stderr)
    return regs


def first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]


def register_commands(cli) -> None:
    """Every plugin's `register_commands` hook; one that raises is reported and left out."""
    load_plugins()  # a no-op once loaded (`vqt` loads them first, with its own choice of built-ins)
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as exc:  # noqa: BLE001
            failed_plugins[impl.plugin_name] = f"its register_commands hook raised {first_line(exc)}"
            print(f"warning: plugin '{impl.plugin_name}' left out: {failed_plugins[impl.plugin_name]}",
                  file=sys.stderr)  # fmt: skip


def registry(kind: str) -> Registry:
    return registries()[kind]
