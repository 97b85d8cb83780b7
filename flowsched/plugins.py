"""Plugins: custom operators, hooks, template macros and web views.

Plugins come from two places, loaded the same way by the scheduler, workers
and webserver: Python files in ``core.plugins_folder`` (that folder is put on
``sys.path``, so DAG files simply ``from my_plugin import MyOperator``) and
installed packages that declare a ``flowsched.plugins`` entry point.

A plugin is a subclass of :class:`FlowschedPlugin`. A plugin that fails to
import is recorded with its traceback and skipped: it never takes a component
down. Every plugin file has a sha256 fingerprint; a task whose operator comes
from a plugin file carries that fingerprint to the worker, which refuses to
run it with a different copy of the file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from flowsched.config import get_config
from flowsched.releases import plugins_release_for

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "flowsched.plugins"


class FlowschedPlugin:
    """Subclass and set what the plugin provides."""

    name: str = ""
    operators: list[type] = []
    hooks: list[type] = []
    macros: dict[str, Any] = {}
    blueprints: list[Any] = []


@dataclass
class LoadedPlugin:
    name: str
    source: str
    fingerprint: str | None
    plugin: type[FlowschedPlugin]


@dataclass
class PluginRegistry:
    plugins: list[LoadedPlugin] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def macros(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for loaded in self.plugins:
            merged.update(loaded.plugin.macros)
        return merged

    @property
    def blueprints(self) -> list[Any]:
        return [bp for loaded in self.plugins for bp in loaded.plugin.blueprints]


def file_fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Set in a try's own process when it runs a kept earlier release (flowsched.releases).
_release_in_use: Path | None = None


def plugins_folder() -> Path:
    if _release_in_use is not None:
        return _release_in_use
    return Path(get_config().core.plugins_folder).resolve()


_on_path: Path | None = None


def ensure_on_path() -> Path:
    """Put the plugins folder on ``sys.path``, forgetting a previous folder's modules.

    A process whose configuration names another folder (an embedding program, the
    test suite) must not import a plugin module cached from the old one.
    """
    global _on_path
    folder = plugins_folder()
    if _on_path is not None and _on_path != folder:
        _forget_folder(_on_path)
    _on_path = folder
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return folder


def _forget_folder(folder: Path) -> None:
    while str(folder) in sys.path:
        sys.path.remove(str(folder))
    for name, module in list(sys.modules.items()):
        filename = getattr(module, "__file__", None)
        if filename and folder in Path(filename).parents:
            del sys.modules[name]


def _plugin_classes(module: Any) -> list[type[FlowschedPlugin]]:
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, FlowschedPlugin)
        and value is not FlowschedPlugin
        and value.__module__ == module.__name__
    ]


def _load_folder(registry: PluginRegistry) -> None:
    folder = ensure_on_path()
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.py")):
        relative = path.name
        module_name = path.stem
        try:
            module = sys.modules.get(module_name)
            if module is None or getattr(module, "__file__", None) != str(path):
                spec = importlib.util.spec_from_file_location(module_name, path)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
        except Exception:
            sys.modules.pop(module_name, None)
            registry.errors[relative] = traceback.format_exc()
            log.error("plugin file %s failed to import:\n%s", relative, registry.errors[relative])
            continue
        fingerprint = file_fingerprint(path)
        for plugin in _plugin_classes(module):
            registry.plugins.append(
                LoadedPlugin(plugin.name or plugin.__name__, relative, fingerprint, plugin)
            )


def _load_entry_points(registry: PluginRegistry) -> None:
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        source = f"entry point {entry.name} ({entry.value})"
        try:
            plugin = entry.load()
        except Exception:
            registry.errors[source] = traceback.format_exc()
            log.error("plugin %s failed to load:\n%s", source, registry.errors[source])
            continue
        if not (isinstance(plugin, type) and issubclass(plugin, FlowschedPlugin)):
            registry.errors[source] = f"{source} is not a FlowschedPlugin subclass"
            continue
        registry.plugins.append(LoadedPlugin(plugin.name or entry.name, source, None, plugin))


_registry: tuple[Path, PluginRegistry] | None = None


def load_plugins(reload: bool = False) -> PluginRegistry:
    """Load plugins once per process and plugins folder (or again with ``reload``).

    Keyed by the folder so a process whose configuration changes (an embedding
    program, the test suite) never serves another home's plugins, or none.
    """
    global _registry
    folder = plugins_folder()
    if _registry is None or reload or _registry[0] != folder:
        registry = PluginRegistry()
        _load_folder(registry)
        _load_entry_points(registry)
        _registry = (folder, registry)
    return _registry[1]


def plugin_file_of(obj: Any) -> tuple[str, str] | None:
    """(file relative to the plugins folder, sha256) if ``obj``'s class comes from there."""
    module = sys.modules.get(type(obj).__module__)
    filename = getattr(module, "__file__", None)
    if not filename:
        return None
    path = Path(filename).resolve()
    folder = plugins_folder()
    if folder not in path.parents:
        return None
    return str(path.relative_to(folder)), file_fingerprint(path)


def check_plugin_files(expected: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """Plugin files whose local sha256 differs: (file, expected, local or None).

    When ``current`` differs but a kept earlier release has every expected
    file (the plugins were synced after the try was queued), this process
    switches to that release and nothing differs. Call it only in the process
    of one try: the switch lasts as long as the process.
    """
    global _release_in_use
    if not expected:
        return []
    configured = Path(get_config().core.plugins_folder)
    release, mismatches = plugins_release_for(configured, expected)
    if not mismatches and release != plugins_folder():
        previous = str(plugins_folder())
        while previous in sys.path:
            sys.path.remove(previous)
        _release_in_use = release
        sys.path.insert(0, str(release))
        load_plugins(reload=True)  # re-imports each plugin module from the release
        log.info("plugins as queued: running kept release %s", release)
    return mismatches
