"""``systemd``: a systemd unit as an HA service (``systemd:nginx.service``).

Usable where systemd runs (``systemctl is-system-running`` answers anything but
``offline``). A unit name without a suffix means ``NAME.service``.
"""

from __future__ import annotations

import re

from hafence.ha.resources import (
    RUNNING,
    STOPPED,
    UNKNOWN,
    ResourceError,
    ResourceType,
    which,
)

_UNIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:_.@\\-]*$")
_ACTIVE = {"active": RUNNING, "reloading": RUNNING, "inactive": STOPPED, "failed": STOPPED}
# systemctl is-enabled: started without HA (True), never by itself (False); else unknown
_ENABLED = {
    "enabled": True,
    "enabled-runtime": True,
    "alias": True,
    "indirect": True,
    "generated": True,
    "disabled": False,
    "masked": False,
    "masked-runtime": False,
    "linked": False,
    "linked-runtime": False,
}


class SystemdType(ResourceType):
    name = "systemd"
    description = "systemd unit (systemctl)"

    def available(self) -> str | None:
        if which("systemctl") is None:
            return f"'systemctl' not found on node {self.node}"
        try:
            proc = self.run("-", ["systemctl", "is-system-running"], check=False, timeout=10)
        except ResourceError as exc:
            return exc.message
        state = proc.stdout.strip()
        if state in ("offline", ""):
            return f"systemd is not running on node {self.node} (is-system-running: {state})"
        return None

    def unit(self, rid: str) -> str:
        if not _UNIT.match(rid):
            raise ResourceError(self.sid(rid), "config", f"invalid systemd unit name '{rid}'")
        return rid if "." in rid else f"{rid}.service"

    def exists(self, rid: str) -> bool:
        unit = self.unit(rid)
        self.require_available(rid)
        argv = ["systemctl", "show", "--property=LoadState", "--value", "--", unit]
        state = self.run(rid, argv, check=False).stdout.strip()
        return state not in ("not-found", "")

    def status(self, rid: str) -> str:
        unit = self.unit(rid)
        self.require_available(rid)
        # is-active exits 3 for inactive units: the output word is the answer.
        word = self.run(rid, ["systemctl", "is-active", "--", unit], check=False).stdout.strip()
        return _ACTIVE.get(word, UNKNOWN)

    def start(self, rid: str) -> None:
        self.check_config(rid)
        self.run(rid, ["systemctl", "start", "--", self.unit(rid)])

    def stop(self, rid: str, timeout: float) -> None:
        unit = self.unit(rid)
        self.require_available(rid)
        self.run(rid, ["systemctl", "stop", "--", unit], timeout=timeout)

    def outside_ha_advice(self, rid: str) -> str:
        return f"disable its start at boot: 'systemctl disable {self.unit(rid)}'"

    def enabled_outside_ha(self, rid: str) -> bool | None:
        """Whether systemd starts the unit by itself (enabled at boot, or pulled in)."""
        unit = self.unit(rid)
        if self.available():
            return None
        word = self.run(rid, ["systemctl", "is-enabled", "--", unit], check=False).stdout.strip()
        return _ENABLED.get(word)

    def check_config(self, rid: str) -> None:
        if not self.exists(rid):
            raise ResourceError(
                self.sid(rid), "not_found", f"unit {self.unit(rid)} not found on {self.node}"
            )
