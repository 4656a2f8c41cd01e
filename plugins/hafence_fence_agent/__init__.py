"""hafence plugin 'fence_agent': run installed ClusterLabs fence_* agents.

As driver ``fence_agent`` (``agent=fence_ipmilan ...``), or implicitly: a fence.cfg
DRIVER starting with ``fence_`` that no hafence plugin provides is answered here, through
the ``hafence_fence_agent_driver`` hook (see :func:`hafence.fence.chain.driver_class`).
"""

from hafence.hookspecs import hookimpl
from hafence_fence_agent.driver import FenceAgentDriver


@hookimpl
def hafence_fence_drivers() -> list[type]:
    return [FenceAgentDriver]


@hookimpl
def hafence_fence_agent_driver(agent: str) -> type[FenceAgentDriver] | None:
    # fence_agent itself is the generic bridge (agent=...), not an agent to run
    if agent == FenceAgentDriver.name:
        return None
    return FenceAgentDriver.for_agent(agent)  # UnknownDriverError: not installed


__all__ = ["FenceAgentDriver"]
