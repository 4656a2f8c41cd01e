"""hafence plugin 'redfish' (placeholder until its driver lands)."""

from hafence.hookspecs import hookimpl


@hookimpl
def hafence_fence_drivers() -> list[type]:
    return []
