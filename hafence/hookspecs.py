"""The plugin contract: hook specifications in the pluggy project ``hafence``.

A plugin is any module or object with ``@hookimpl`` functions of these names, made
known through an entry point in the ``hafence`` group::

    [project.entry-points.hafence]
    mypdu = "hafence_mypdu"

Hooks that return drivers return *classes*; the core instantiates them. A plugin that
declares its drivers in a manifest (see :mod:`hafence.plugins`) also declares there the
other hooks it implements, in the entry-point group ``hafence.hooks``
(``HOOK = the plugin's module``), so a lookup imports only the plugins that answer it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from hafence.fence.driver import FenceDriver

PROJECT = "hafence"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def hafence_fence_drivers() -> list[type[FenceDriver]]:
    """Return the fence driver classes this plugin provides."""


@hookspec
def hafence_watchdog_drivers() -> list[type[Any]]:
    """Return watchdog driver classes (see ``hafence.watchdog.driver.WatchdogDriver``)."""


@hookspec
def hafence_resource_types() -> list[type[Any]]:
    """Return HA resource type classes (see ``hafence.ha.resources.ResourceType``)."""


@hookspec(firstresult=True)
def hafence_fence_agent_driver(agent: str) -> type[FenceDriver] | None:
    """Return a driver class for the ClusterLabs fence agent ``agent`` (``fence_*``), or
    None if this plugin cannot run it.

    Asked for a fence.cfg DRIVER that starts with ``fence_`` and that no plugin provides
    as a driver of its own; the first plugin that answers wins. Raise
    :class:`hafence.errors.UnknownDriverError` to say the agent is not installed.
    """


@hookspec
def hafence_fence_event(event: dict[str, Any]) -> None:
    """Called after every fence attempt with its history record (secrets masked).

    Use it to mail or page an operator. Exceptions are logged and ignored.
    """
