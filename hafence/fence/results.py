"""What fencing reports: one device action, a level, an attempt, a whole fence, a dry run.

Plain dataclasses shared by the single-device engine (:mod:`hafence.fence.engine`), the
chain (:mod:`hafence.fence.fencer`), the CLI and the fence runner.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from hafence.fence.driver import POWER, PowerState


@dataclass
class ActionResult:
    """One action on one device. ``ok`` for off means a *confirmed* off."""

    device: str
    action: str
    ok: bool
    state: str = PowerState.UNKNOWN.value  # last power state seen
    error_kind: str | None = None
    message: str = ""
    duration: float = 0.0
    driver: str = ""
    ports: list[dict[str, str]] | None = None  # for 'list'
    kind: str = ""  # the driver's kind: power or fabric (hafence.fence.driver)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LevelResult:
    level: int  # 1-based
    name: str
    ok: bool
    devices: list[ActionResult] = field(default_factory=list)


@dataclass
class AttemptResult:
    attempt: int  # 1-based
    ok: bool
    level: int | None  # the level that succeeded
    levels: list[LevelResult] = field(default_factory=list)
    started: float = 0.0  # epoch seconds
    duration: float = 0.0
    backoff: float = 0.0  # seconds waited after this attempt before the next one


@dataclass
class FenceResult:
    """The outcome of fencing one node. ``ok`` only when a whole level confirmed."""

    node: str
    action: str
    ok: bool
    level: int | None = None  # 1-based level that succeeded
    level_name: str | None = None
    attempts: list[AttemptResult] = field(default_factory=list)
    duration: float = 0.0
    actor: str = ""
    error_kind: str | None = None
    message: str = ""

    @property
    def devices(self) -> list[str]:
        """Devices of the level that succeeded."""
        if not self.ok or not self.attempts:
            return []
        last = self.attempts[-1]
        return [d.device for lv in last.levels if lv.ok for d in lv.devices]

    @property
    def power_off(self) -> bool:
        """A confirmed off by a level whose devices all cut power: the node has stopped
        (a ``fabric`` device only cut it off). See docs/fencing.md."""
        if not self.ok or self.action != "off" or not self.attempts:
            return False
        devs = [d for lv in self.attempts[-1].levels if lv.ok for d in lv.devices]
        return bool(devs) and all(d.kind == POWER for d in devs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass
class DeviceCheck:
    """Dry-run verdict for one device: built, reachable, credentials good, status read."""

    level: int
    device: str
    driver: str
    ok: bool
    state: str = PowerState.UNKNOWN.value
    error_kind: str | None = None
    message: str = ""
    duration: float = 0.0
    budget_seconds: float = 0.0  # worst case of a verified off on this device


@dataclass
class CheckReport:
    """``fence NODE --dry-run``: every device checked, nothing powered off."""

    node: str
    ok: bool
    devices: list[DeviceCheck] = field(default_factory=list)
    levels: int = 0
    attempt_budget_seconds: float = 0.0  # one pass over the chain, every level failing
    budget_seconds: float = 0.0  # all attempts plus back-off: the worst case of fence()
    retries: int = 0
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
