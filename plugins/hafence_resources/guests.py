"""``vm`` and ``ct``: Proxmox VE guests driven through ``qm`` and ``pct``.

Only usable on a Proxmox VE node; elsewhere ``available()`` says which command is
missing and every action raises ``ResourceError(reason="unavailable")``.
"""

from __future__ import annotations

from typing import ClassVar

from hafence.ha.resources import (
    RUNNING,
    STOPPED,
    UNKNOWN,
    ResourceError,
    ResourceType,
    which,
)


class GuestType(ResourceType):
    """Common to qm and pct: same sub-commands, same ``status: running`` output."""

    command: ClassVar[str] = ""
    package: ClassVar[str] = ""

    def available(self) -> str | None:
        if which(self.command) is None:
            return (
                f"'{self.command}' not found: {self.name} resources need Proxmox VE "
                f"({self.package}) on node {self.node}"
            )
        return None

    def _check_id(self, rid: str) -> None:
        if not rid.isdigit():
            raise ResourceError(self.sid(rid), "config", f"invalid {self.name} ID '{rid}'")

    def exists(self, rid: str) -> bool:
        self._check_id(rid)
        self.require_available(rid)
        return self.run(rid, [self.command, "config", rid], check=False).returncode == 0

    def status(self, rid: str) -> str:
        self._check_id(rid)
        self.require_available(rid)
        proc = self.run(rid, [self.command, "status", rid], check=False)
        if proc.returncode != 0:
            return UNKNOWN
        word = proc.stdout.strip().partition(":")[2].strip()
        return {"running": RUNNING, "stopped": STOPPED}.get(word, UNKNOWN)

    def start(self, rid: str) -> None:
        self.check_config(rid)
        self.run(rid, [self.command, "start", rid])

    def stop(self, rid: str, timeout: float) -> None:
        self._check_id(rid)
        self.require_available(rid)
        # A clean shutdown first; --forceStop makes qm/pct hard-stop after the timeout.
        argv = [self.command, "shutdown", rid, "--timeout", str(int(timeout)), "--forceStop", "1"]
        self.run(rid, argv, timeout=timeout + self.command_timeout)

    def check_config(self, rid: str) -> None:
        if not self.exists(rid):
            raise ResourceError(
                self.sid(rid), "not_found", f"{self.name} {rid} is not defined on {self.node}"
            )

    def outside_ha_advice(self, rid: str) -> str:
        return f"clear its start at boot: '{self.command} set {rid} --onboot 0'"

    def enabled_outside_ha(self, rid: str) -> bool | None:
        """``onboot: 1`` in the guest's config: the node starts it at boot, HA or not."""
        self._check_id(rid)
        if self.available():
            return None
        proc = self.run(rid, [self.command, "config", rid], check=False)
        if proc.returncode != 0:
            return None
        for line in proc.stdout.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "onboot":
                return value.strip() == "1"
        return False

    def _stop_for_offline_move(self, rid: str) -> None:
        # an offline move needs the guest down (Proxmox's HA shuts it down first); qm and
        # pct refuse to move a running guest offline, so a failed stop fails the move
        if self.status(rid) != STOPPED:
            self.stop(rid, 60)


class VmType(GuestType):
    name = "vm"
    description = "Proxmox VE virtual machine (qm)"
    command = "qm"
    package = "qemu-server"

    def migrate(self, rid: str, target: str, online: bool) -> None:
        self._check_id(rid)
        self.require_available(rid)
        if not online:
            self._stop_for_offline_move(rid)
        argv = [self.command, "migrate", rid, target] + (["--online"] if online else [])
        self.run(rid, argv, timeout=max(self.command_timeout, 3600))


class CtType(GuestType):
    name = "ct"
    description = "Proxmox VE container (pct)"
    command = "pct"
    package = "pve-container"

    def migrate(self, rid: str, target: str, online: bool) -> None:
        self._check_id(rid)
        self.require_available(rid)
        if not online:
            self._stop_for_offline_move(rid)
        # Containers cannot live-migrate: "online" is a restart migration.
        argv = [self.command, "migrate", rid, target] + (["--restart"] if online else [])
        self.run(rid, argv, timeout=max(self.command_timeout, 3600))
