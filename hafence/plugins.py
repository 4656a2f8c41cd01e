"""The plugin manager: loads every entry point of the ``hafence`` group.

Each entry point is loaded on its own: a plugin that fails to import, or whose hook
raises or returns something that breaks the contract, is reported by name (in
:attr:`PluginRegistry.errors` and the log) and the others load regardless.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import pluggy

from hafence import hookspecs
from hafence.errors import PluginError, UnknownDriverError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hafence"


@dataclass
class PluginInfo:
    name: str
    source: str  # distribution and version, or "registered" for objects added in code
    module: str
    error: str | None = None


class PluginRegistry:
    def __init__(self, *, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.errors: list[PluginError] = []
        self._owners: dict[tuple[str, str], str] = {}
        if load_entry_points:
            self.load_entry_points()

    # -- loading --------------------------------------------------------------------
    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        seen: set[str] = set()
        for ep in importlib.metadata.entry_points(group=group):
            if ep.name in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add(ep.name)
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown"
            try:
                obj = ep.load()
                self.pm.register(obj, name=ep.name)
            except Exception as exc:  # a broken plugin must not stop the others
                self._fail(ep.name, f"failed to load from {ep.value} ({dist}): {exc!r}")
                self.plugins[ep.name] = PluginInfo(ep.name, dist, ep.value, str(exc))
                continue
            self.plugins[ep.name] = PluginInfo(ep.name, dist, ep.value)

    def register(self, obj: Any, name: str) -> None:
        """Register a plugin object directly (tests, embedding applications)."""
        self.pm.register(obj, name=name)
        module = getattr(obj, "__name__", type(obj).__name__)
        self.plugins[name] = PluginInfo(name, "registered", module)

    def _fail(self, plugin: str, message: str) -> None:
        err = PluginError(plugin, message)
        self.errors.append(err)
        log.error("%s", err)

    # -- hooks ----------------------------------------------------------------------
    def _collect(self, hook_name: str, check: Callable[[Any], str | None]) -> dict[str, Any]:
        """Call one hook per plugin, isolating failures; return {driver name: (class)}."""
        out: dict[str, Any] = {}
        owner: dict[str, str] = {}
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():  # registration order
            plugin = impl.plugin_name
            try:
                result = impl.function()
            except Exception as exc:
                self._fail(plugin, f"{hook_name}() raised {exc!r}")
                continue
            if not isinstance(result, Iterable):
                self._fail(plugin, f"{hook_name}() must return a list, got {result!r}")
                continue
            for item in result:
                problem = check(item)
                name = getattr(item, "name", None)
                if problem:
                    self._fail(plugin, f"{hook_name}(): {item!r} {problem}")
                elif name in out:
                    if out[name] is not item:
                        self._fail(
                            plugin, f"driver name '{name}' already provided by '{owner[name]}'"
                        )
                else:
                    out[name] = item
                    owner[name] = plugin
        self._owners.update({(hook_name, n): p for n, p in owner.items()})
        return out

    def owner(self, hook_name: str, driver: str) -> str | None:
        """Which plugin provided a driver (for ``hafence plugins list``)."""
        return self._owners.get((hook_name, driver))

    def fence_drivers(self) -> dict[str, type]:
        from hafence.fence.driver import FenceDriver

        def check(item: Any) -> str | None:
            if not (isinstance(item, type) and issubclass(item, FenceDriver)):
                return "is not a FenceDriver subclass"
            if not isinstance(getattr(item, "name", None), str) or not item.name:
                return "has no name"
            return None

        return self._collect("hafence_fence_drivers", check)

    def fence_driver(self, name: str) -> type:
        drivers = self.fence_drivers()
        if name not in drivers:
            raise UnknownDriverError("fence", name, list(drivers))
        return drivers[name]

    def watchdog_drivers(self) -> dict[str, type]:
        return self._collect("hafence_watchdog_drivers", _named_class)

    def resource_types(self) -> dict[str, type]:
        return self._collect("hafence_resource_types", _named_class)

    def notify_fence_event(self, event: dict[str, Any]) -> None:
        for impl in self.pm.hook.hafence_fence_event.get_hookimpls():
            try:
                impl.function(event=event)
            except Exception as exc:
                log.error("plugin '%s': hafence_fence_event raised %r", impl.plugin_name, exc)


def _named_class(item: Any) -> str | None:
    if not isinstance(item, type):
        return "is not a class"
    if not isinstance(getattr(item, "name", None), str) or not item.name:
        return "has no name"
    return None


@cache
def get_registry() -> PluginRegistry:
    """The process-wide registry, loaded from entry points on first use."""
    return PluginRegistry()
