"""The plugin contract: hook specifications in the pluggy project ``hafence``.

A plugin is any module or object with ``@hookimpl`` functions of these names, made
known through an entry point in the ``hafence`` group::

    [project.entry-points.hafence]
    mypdu = "hafence_mypdu"

Hooks that return drivers return *classes*; the core instantiates them.
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


@hookspec
def hafence_fence_event(event: dict[str, Any]) -> None:
    """Called after every fence attempt with its history record (secrets masked).

    Use it to mail or page an operator. Exceptions are logged and ignored.
    """
