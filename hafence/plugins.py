"""The plugin manager: plugins are entry points of the ``hafence`` group, loaded lazily.

Reading the entry points imports nothing (not even :mod:`importlib.metadata`: see
:mod:`hafence.plugins_index`). A plugin's module is imported when something it provides
is needed:

* a driver by name (:meth:`PluginRegistry.fence_driver`, :meth:`~PluginRegistry.driver`)
  imports only the plugin that declares that name in its distribution's *manifest*:
  entry points in the groups of :data:`MANIFESTS` (``hafence.fence_drivers``,
  ``hafence.watchdog_drivers``, ``hafence.resource_types``), each ``DRIVER = MODULE``
  with MODULE the plugin's own entry point value. A plugin with a manifest declares
  everything it provides there;
* a plugin without a manifest may provide anything: it is imported whenever a lookup
  needs every plugin (a name no manifest declares, a list of all drivers of a kind);
* a hook that answers a question (``hafence_fence_agent_driver``) asks the plugins that
  declare it in the group :data:`HOOK_MANIFEST` (``HOOK = MODULE``) and those without a
  manifest;
* fence events go to every plugin, so :meth:`~PluginRegistry.notify_fence_event` and
  :meth:`~PluginRegistry.load_all` import them all.

Each plugin is loaded on its own: a plugin that fails to import, or whose hook raises
or returns something that breaks the contract, is reported by name (in
:attr:`PluginRegistry.errors` and the log) and the others load regardless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import pluggy

from hafence import hookspecs
from hafence.errors import PluginError, UnknownDriverError
from hafence.plugins_index import EntryPoint, entry_points

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hafence"
# hook -> (manifest entry point group, kind of driver as users name it)
MANIFESTS = {
    "hafence_fence_drivers": ("hafence.fence_drivers", "fence"),
    "hafence_watchdog_drivers": ("hafence.watchdog_drivers", "watchdog"),
    "hafence_resource_types": ("hafence.resource_types", "resource"),
}
# hooks other than the driver lists that a plugin with a manifest implements
HOOK_MANIFEST = "hafence.hooks"


@dataclass
class PluginInfo:
    name: str
    module: str
    entry_point: EntryPoint | None = None
    error: str | None = None
    loaded: bool = False
    registered: bool = False  # added in code, not through an entry point

    @property
    def source(self) -> str:
        """Distribution and version, or "registered" for objects added in code (read
        only when asked: parsing a distribution's metadata is not free)."""
        if self.registered:
            return "registered"
        if self.entry_point is None:
            return "unknown"
        dist = self.entry_point.dist
        return f"{dist.name} {dist.version}"


class PluginRegistry:
    def __init__(self, *, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.errors: list[PluginError] = []
        self._owners: dict[tuple[str, str], str] = {}
        self._pending: dict[str, EntryPoint] = {}
        # hook -> driver name -> plugin that declares it in its manifest
        self._declared: dict[str, dict[str, str]] = {hook: {} for hook in MANIFESTS}
        self._declaring: set[str] = set()  # plugins with a manifest
        self._hooks: dict[str, set[str]] = {}  # HOOK_MANIFEST: hook -> declaring plugins
        if load_entry_points:
            self.load_entry_points()

    # -- loading --------------------------------------------------------------------
    def load_entry_points(self) -> None:
        """Note every plugin of the ``hafence`` group and its manifest; import none."""
        eps = entry_points()

        def select(group: str) -> list[EntryPoint]:
            return [ep for ep in eps if ep.group == group]

        group = ENTRY_POINT_GROUP
        by_module: dict[str, str] = {}
        for ep in select(group):
            if ep.name in self.plugins:  # the same plugin name in two distributions
                continue
            self.plugins[ep.name] = PluginInfo(ep.name, ep.value, ep)
            self._pending[ep.name] = ep
            by_module.setdefault(ep.value, ep.name)
        for hook, (manifest, kind) in MANIFESTS.items():
            for ep in select(manifest):
                plugin = by_module.get(ep.value)
                if plugin is None:
                    self._fail(
                        ep.value,
                        f"{manifest} declares {kind} driver '{ep.name}', but no '{group}' "
                        f"entry point names module {ep.value}",
                    )
                    continue
                self._declared[hook].setdefault(ep.name, plugin)
                self._declaring.add(plugin)
        for ep in select(HOOK_MANIFEST):
            plugin = by_module.get(ep.value)
            if plugin is None or not hasattr(self.pm.hook, ep.name):
                what = "no such hook" if plugin else f"no '{group}' entry point names it"
                self._fail(ep.value, f"{HOOK_MANIFEST} declares hook '{ep.name}': {what}")
                continue
            self._hooks.setdefault(ep.name, set()).add(plugin)
            self._declaring.add(plugin)

    def register(self, obj: Any, name: str) -> None:
        """Register a plugin object directly (tests, embedding applications)."""
        self.pm.register(obj, name=name)
        module = getattr(obj, "__name__", type(obj).__name__)
        self.plugins[name] = PluginInfo(name, module, loaded=True, registered=True)

    def _load(self, names: Iterable[str]) -> None:
        for name in names:
            ep = self._pending.pop(name, None)
            if ep is None:
                continue
            info = self.plugins[name]
            try:
                self.pm.register(ep.load(), name=name)
            except Exception as exc:  # a broken plugin must not stop the others
                self._fail(name, f"failed to load from {ep.value} ({info.source}): {exc!r}")
                info.error = str(exc)
                continue
            info.loaded = True

    def load_all(self) -> None:
        """Import every plugin (for listings, and hooks every plugin may implement)."""
        self._load(list(self._pending))

    def _fail(self, plugin: str, message: str) -> None:
        if any(e.plugin == plugin and e.message == message for e in self.errors):
            return  # the same fault seen by a later lookup: reported once
        err = PluginError(plugin, message)
        self.errors.append(err)
        log.error("%s", err)

    # -- hooks ----------------------------------------------------------------------
    def _collect(
        self, hook_name: str, check: Callable[[Any], str | None], plugins: Collection[str]
    ) -> dict[str, Any]:
        """Call one hook of each of ``plugins``, isolating failures; {driver name: class}."""
        out: dict[str, Any] = {}
        owner: dict[str, str] = {}
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():  # registration order
            plugin = impl.plugin_name
            if plugin not in plugins:
                continue
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

    def _all(self, hook_name: str, check: Callable[[Any], str | None]) -> dict[str, Any]:
        """Every driver one hook provides: from the plugins that declare it, and from
        every plugin without a manifest."""
        wanted = {p for p in self.plugins if p not in self._declaring}
        wanted |= set(self._declared[hook_name].values())
        self._load(wanted)
        return self._collect(hook_name, check, [p for p, i in self.plugins.items() if i.loaded])

    def driver(self, hook_name: str, name: str) -> type:
        """One driver by name, importing as few plugins as possible (see module doc)."""
        check = _CHECKS[hook_name]
        declared = self._declared[hook_name]
        plugin = declared.get(name)
        broken: str | None = None  # why the plugin declaring ``name`` could not provide it
        if plugin is not None:
            self._load([plugin])
            found = self._collect(hook_name, check, {plugin})
            if name in found:
                return found[name]
            if self.plugins[plugin].error is None:
                self._fail(plugin, f"declares '{name}', but {hook_name}() does not return it")
            broken = str(next(e for e in reversed(self.errors) if e.plugin == plugin))
        # A plugin with a manifest declares all it provides: only the others can have it.
        undeclared = {p for p in self.plugins if p not in self._declaring}
        self._load(undeclared)
        found = self._collect(hook_name, check, undeclared)
        if name in found:
            return found[name]
        usable = {n for n, p in declared.items() if self.plugins[p].error is None}
        kind = MANIFESTS[hook_name][1]
        raise UnknownDriverError(kind, name, list(set(found) | usable), reason=broken)

    def owner(self, hook_name: str, driver: str) -> str | None:
        """Which plugin provided a driver (for ``hafence plugins list``)."""
        return self._owners.get((hook_name, driver))

    def fence_drivers(self) -> dict[str, type]:
        return self._all("hafence_fence_drivers", _fence_driver_class)

    def fence_driver(self, name: str) -> type:
        return self.driver("hafence_fence_drivers", name)

    def watchdog_drivers(self) -> dict[str, type]:
        return self._all("hafence_watchdog_drivers", _named_class)

    def resource_types(self) -> dict[str, type]:
        return self._all("hafence_resource_types", _named_class)

    def fence_agent_driver(self, agent: str) -> type | None:
        """A driver class for the ClusterLabs agent ``agent`` (``fence_*``) from the first
        plugin that answers ``hafence_fence_agent_driver``; None when none does.

        Raises :class:`UnknownDriverError` when the answering plugin says the agent is
        not installed; a plugin whose hook fails otherwise is reported and skipped.
        """
        hook_name = "hafence_fence_agent_driver"
        wanted = {p for p in self.plugins if p not in self._declaring}
        wanted |= self._hooks.get(hook_name, set())
        self._load(wanted)
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):  # pluggy's order
            try:
                found = impl.function(agent=agent)
            except UnknownDriverError:
                raise
            except Exception as exc:
                self._fail(impl.plugin_name, f"{hook_name}({agent!r}) raised {exc!r}")
                continue
            if found is None:
                continue
            problem = _fence_driver_class(found)
            if problem:
                self._fail(impl.plugin_name, f"{hook_name}({agent!r}): {found!r} {problem}")
                continue
            return found
        return None

    def notify_fence_event(self, event: dict[str, Any]) -> None:
        self.load_all()
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


def _fence_driver_class(item: Any) -> str | None:
    from hafence.fence.driver import FenceDriver

    if not (isinstance(item, type) and issubclass(item, FenceDriver)):
        return "is not a FenceDriver subclass"
    return _named_class(item)


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "hafence_fence_drivers": _fence_driver_class,
    "hafence_watchdog_drivers": _named_class,
    "hafence_resource_types": _named_class,
}


class DriverPlugin:
    """A plugin object that provides the given fence driver classes, for registering in
    code (``registry.register(DriverPlugin(MyDriver), "name")``): the conformance kit,
    the simulator."""

    def __init__(self, *drivers: type) -> None:
        self.drivers = drivers

    @hookspecs.hookimpl
    def hafence_fence_drivers(self) -> list[type]:
        return list(self.drivers)


@cache
def get_registry() -> PluginRegistry:
    """The process-wide registry (entry points read on first use, plugins on demand)."""
    return PluginRegistry()
