"""``vm`` and ``ct``: Proxmox VE guests driven through ``qm`` and ``pct``.

Only usable on a Proxmox VE node; elsewhere ``available()`` says which command is
missing and every action raises ``ResourceError(reason="unavailable")``.

A guest's config lives on Proxmox's cluster filesystem, in its node's directory
(``/etc/pve/nodes/NODE/qemu-server/ID.conf``, ``.../lxc/ID.conf``). Recovering a guest
from a fenced node therefore moves that file to the new node (:meth:`GuestType.steal`,
Proxmox's ``steal_service``) and drops a leftover lock of an interrupted job
(:meth:`GuestType.remove_locks`); both need that filesystem (``HAFENCE_PVE_ROOT``
points elsewhere for tests). Without it these types cannot be recovered: the master
logs why and retries.

The schedulers' figures: ``static_stats`` from the config (``cpulimit``, else ``vcpus``
or ``sockets`` x ``cores``; ``memory`` in MiB), ``dynamic_stats`` from
``qm|pct status --verbose`` (``cpu`` share of ``cpus``, ``mem`` in bytes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from hafence.ha.resources import (
    RUNNING,
    STOPPED,
    UNKNOWN,
    ResourceError,
    ResourceType,
    which,
)
from hafence.store.atomic import write_atomic

MIB = 1024**2


class GuestType(ResourceType):
    """Common to qm and pct: same sub-commands, same ``status: running`` output."""

    command: ClassVar[str] = ""
    package: ClassVar[str] = ""
    config_dir: ClassVar[str] = ""  # the guest configs' directory under a node's
    default_cpus: ClassVar[int] = 1  # when the config names no CPU count (ct: 0 = all)

    @staticmethod
    def pve_root() -> Path:
        return Path(os.environ.get("HAFENCE_PVE_ROOT", "/etc/pve"))

    def config_path(self, rid: str, node: str) -> Path:
        self._check_id(rid)
        return self.pve_root() / "nodes" / node / self.config_dir / f"{rid}.conf"

    def _require_cluster_fs(self, rid: str) -> None:
        if not (self.pve_root() / "nodes").is_dir():
            raise ResourceError(
                self.sid(rid),
                "unavailable",
                f"{self.name} guests need Proxmox VE's cluster filesystem "
                f"({self.pve_root()}/nodes) to move between nodes",
            )

    def steal(self, rid: str, fenced_node: str, new_node: str) -> None:
        """Move the guest's config from the fenced node's directory to the new node's."""
        if fenced_node == new_node:
            return
        self._require_cluster_fs(rid)
        old, new = self.config_path(rid, fenced_node), self.config_path(rid, new_node)
        if not old.exists() and new.exists():
            return  # moved already (a master that died after the rename)
        try:
            new.parent.mkdir(parents=True, exist_ok=True)
            os.rename(old, new)
        except OSError as exc:
            raise ResourceError(
                self.sid(rid), "failed", f"rename '{old}' to '{new}' failed - {exc.strerror}"
            ) from None

    def remove_locks(self, rid: str, locks: Sequence[str], node: str) -> str | None:
        """Drop the config's ``lock:`` when it is one of ``locks``; the lock dropped."""
        self._require_cluster_fs(rid)
        path = self.config_path(rid, node)
        try:
            lines = path.read_text().splitlines(keepends=True)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ResourceError(self.sid(rid), "failed", f"{path}: {exc.strerror}") from None
        for i, line in enumerate(lines):
            if line.startswith("["):
                break  # a snapshot section: the current config ends here
            key, _, value = line.partition(":")
            if key.strip() == "lock" and value.strip() in locks:
                del lines[i]
                write_atomic(path, "".join(lines), 0o640)
                return value.strip()
        return None

    def _config(self, rid: str) -> dict[str, str]:
        self._check_id(rid)
        self.require_available(rid)
        proc = self.run(rid, [self.command, "config", rid])
        out: dict[str, str] = {}
        for line in proc.stdout.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in out:
                out[key.strip()] = value.strip()
        return out

    def static_stats(self, rid: str) -> dict[str, float] | None:
        conf = self._config(rid)

        def num(key: str) -> float | None:
            try:
                return float(conf[key]) if key in conf else None
            except ValueError:
                raise ResourceError(
                    self.sid(rid), "config", f"invalid {key} '{conf[key]}'"
                ) from None

        cpus = num("vcpus") or (num("sockets") or 1) * (num("cores") or self.default_cpus)
        return {"maxcpu": num("cpulimit") or cpus, "maxmem": (num("memory") or 512) * MIB}

    def dynamic_stats(self, rid: str) -> dict[str, float] | None:
        self._check_id(rid)
        self.require_available(rid)
        proc = self.run(rid, [self.command, "status", rid, "--verbose"], check=False)
        if proc.returncode != 0:
            return None
        fields: dict[str, str] = {}
        for line in proc.stdout.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())
        if fields.get("status") != "running":
            return None
        try:
            cpu = float(fields.get("cpu") or 0) * float(fields.get("cpus") or 1)
            return {"cpu": cpu, "mem": float(fields.get("mem") or 0)}
        except ValueError:
            return None

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
    config_dir = "qemu-server"

    def migrate(self, rid: str, target: str, online: bool) -> None:
        self._check_id(rid)
        self.require_available(rid)
        if not online:
            self._stop_for_offline_move(rid)
        # as Proxmox's HA: local disks along, and local resources allowed (qemu checks)
        argv = [self.command, "migrate", rid, target, "--with-local-disks", "1", "--force", "1"]
        if online:
            argv += ["--online", "1"]
        self.run(rid, argv, timeout=max(self.command_timeout, 3600))


class CtType(GuestType):
    name = "ct"
    description = "Proxmox VE container (pct)"
    command = "pct"
    package = "pve-container"
    config_dir = "lxc"
    default_cpus = 0  # no 'cores': the container may use all of the node's CPUs

    def migrate(self, rid: str, target: str, online: bool) -> None:
        self._check_id(rid)
        self.require_available(rid)
        # a container cannot move while it runs: it is always stopped first (relocated)
        self._stop_for_offline_move(rid)
        self.run(rid, [self.command, "migrate", rid, target],
                 timeout=max(self.command_timeout, 3600))  # fmt: skip
