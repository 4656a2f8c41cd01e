"""Fencing: driver contract, fence.cfg, per-node chains and the fencer."""

from hafence.fence.driver import FenceDriver, Param, Port, PowerState

__all__ = ["FenceDriver", "Param", "Port", "PowerState"]
