"""hafence plugin 'fence_agent': run installed ClusterLabs fence_* agents.

As driver ``fence_agent`` (``agent=fence_ipmilan ...``), or implicitly: a fence.cfg
DRIVER starting with ``fence_`` that no hafence plugin provides is routed here
(see :func:`hafence.fence.chain.driver_class`).
"""

from hafence.hookspecs import hookimpl
from hafence_fence_agent.driver import FenceAgentDriver


@hookimpl
def hafence_fence_drivers() -> list[type]:
    return [FenceAgentDriver]


__all__ = ["FenceAgentDriver"]
