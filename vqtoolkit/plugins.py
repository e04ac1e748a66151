"""The one plugin manager. Built-ins register through the same hooks as third-party packages."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from functools import cache

import pluggy

from vqtoolkit import hookspecs
from vqtoolkit.registry import KINDS, Registry

DEFAULT_PLUGINS = ("vqtoolkit.builtins", "vqt_image", "vqt_speech", "vqt_video")

pm = pluggy.PluginManager("vqtoolkit")
pm.add_hookspecs(hookspecs)
failed_plugins: dict[str, str] = {}  # plugin name -> why it did not load
_loaded = False


def load_plugins(builtins: bool = True) -> None:
    """Register the built-ins (unless `builtins` is false), then every `vqtoolkit` entry point (unless
    autoload is disabled)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module_name in DEFAULT_PLUGINS if builtins else ():
        try:
            pm.register(importlib.import_module(module_name), name=module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # the plugin exists but something it imports does not
                failed_plugins[module_name] = f"{type(exc).__name__}: {exc}"
    if os.environ.get("VQT_DISABLE_PLUGIN_AUTOLOAD") == "1":
        return
    allow = {n.strip() for n in os.environ.get("VQT_LOAD_PLUGINS", "").split(",") if n.strip()}
    # pm.load_setuptools_entrypoints("vqtoolkit") stops at the first plugin that fails to import;
    # this loop does the same work one entry point at a time so one broken plugin can't hide the rest.
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group != "vqtoolkit" or pm.get_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            if allow and ep.name not in allow and dist.metadata["name"] not in allow:
                continue
            try:
                pm.register(ep.load(), name=ep.name)
            except Exception as exc:  # noqa: BLE001 - any import error is reported, not raised
                failed_plugins[ep.name] = f"{type(exc).__name__}: {exc}"
    for name, why in failed_plugins.items():
        print(f"warning: plugin '{name}' failed to load: {why}", file=sys.stderr)


def plugin_names(builtins: bool = True) -> list[str]:
    load_plugins()
    return [name for name, _ in pm.list_name_plugin() if builtins or name not in DEFAULT_PLUGINS]


@cache
def registries() -> dict[str, Registry]:
    """Call every `register_<kind>` hook once, one plugin at a time so each entry knows its plugin."""
    load_plugins()
    regs = {kind: Registry(kind) for kind in KINDS}
    for kind, registry in regs.items():
        for impl in getattr(pm.hook, f"register_{kind}").get_hookimpls():
            impl.function(register=registry.registrar(impl.plugin_name))
    return regs


def registry(kind: str) -> Registry:
    return registries()[kind]
