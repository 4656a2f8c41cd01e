"""The cluster state store interface shared by the embedded and etcd backends.

What it holds (the same names as Proxmox's /etc/pve/ha):

- ``resources.cfg``, ``groups.cfg`` (section-config text) and ``datacenter.cfg`` (JSON),
  exposed parsed through ``hafence.ha.config``;
- ``manager_status`` (the CRM's JSON), ``lrm_status`` per node (JSON), ``crm_commands``
  (text lines such as ``migrate vm:100 node2``, consumed by the CRM);
- a change token and ``wait_for_change`` (etcd: a watch; embedded: polling), so a CRM
  wakes when someone queues a command instead of only on its timer;
- lease locks (``ha_manager_lock``, ``ha_agent_node1_lock`` ...): a name, an owner and an
  expiry. The embedded backend judges expiry with the clock it was given, so a simulator can
  run it on virtual time; etcd judges it with its own leases.

``locked()`` serialises read-modify-write sequences between processes (``ha-manager``
commands and the CRM). Backends implement the raw ``_get``/``_put`` of named blobs; parsing,
validation and the lock discipline live here, once.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from hafence.ha import config as hacfg
from hafence.ha.config import decode_blob

RESOURCES = "resources.cfg"
GROUPS = "groups.cfg"
DATACENTER = "datacenter.cfg"
MANAGER_STATUS = "manager_status"
CRM_COMMANDS = "crm_commands"


class LockTimeout(Exception):
    """The read-modify-write lock could not be taken within the time bound."""


class StoreUnavailable(Exception):
    """The backend cannot be reached (etcd down or without quorum)."""


class Store(abc.ABC):
    """Cluster state: config, status, commands and lease locks."""

    # -- raw blobs, implemented by a backend ------------------------------------------------
    @abc.abstractmethod
    def _get(self, name: str) -> bytes | None:
        """Content of blob ``name`` (e.g. ``lrm_status/node1``) or None if absent."""

    @abc.abstractmethod
    def _put(self, name: str, data: bytes) -> None:
        """Replace blob ``name`` atomically."""

    @abc.abstractmethod
    def _delete(self, name: str) -> None: ...

    @abc.abstractmethod
    def _list(self, prefix: str) -> list[str]:
        """Names of the blobs below ``prefix/`` (without the prefix)."""

    @abc.abstractmethod
    def locked(self, timeout: float = 10.0) -> AbstractContextManager[None]:
        """Exclusive lock for a read-modify-write sequence (re-entrant in one process)."""

    @abc.abstractmethod
    def quorate(self) -> bool:
        """True when writes are safe (embedded: always; etcd: the cluster answers)."""

    # -- lease locks -------------------------------------------------------------------------
    @abc.abstractmethod
    def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Take ``name`` for ``owner`` for ``ttl`` seconds; also extends one ``owner`` holds.

        False when another owner holds an unexpired lease.
        """

    @abc.abstractmethod
    def renew_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Extend a lease ``owner`` holds; False if it expired or someone else holds it."""

    @abc.abstractmethod
    def release_lease(self, name: str, owner: str) -> bool:
        """Give the lease up; False if ``owner`` did not hold it."""

    @abc.abstractmethod
    def lease_owner(self, name: str) -> str | None:
        """Current holder of an unexpired lease, or None."""

    @abc.abstractmethod
    def change_token(self) -> str:
        """An opaque token that changes whenever config, status or commands change."""

    @abc.abstractmethod
    def wait_for_change(self, token: str, timeout: float) -> str:
        """Block until the state differs from ``token`` (or ``timeout``); the new token.

        Lease renewals do not count: they are not news for the CRM. A change made after
        ``token`` was taken but before the call is seen at once (no lost wake-up).
        """

    def close(self) -> None:
        """Release connections (etcd); nothing for the embedded store."""

    # -- text / JSON helpers -----------------------------------------------------------------
    def read_bytes(self, name: str) -> bytes | None:
        """The blob's stored bytes, undecoded (None if absent)."""
        return self._get(name)

    def read_text(self, name: str) -> str:
        """The blob as UTF-8 text ("" if absent); ConfigErrors names it and the line of a
        byte that is not UTF-8."""
        raw = self._get(name)
        return decode_blob(raw, self.location(name)) if raw is not None else ""

    def write_text(self, name: str, text: str) -> None:
        self._put(name, text.encode())

    def _read_json(self, name: str) -> Any:
        raw = self._get(name)
        if raw is None or not raw.strip():
            return {}
        return json.loads(raw)

    def _write_json(self, name: str, data: Any) -> None:
        self._put(name, (json.dumps(data, indent=4, sort_keys=True) + "\n").encode())

    def location(self, name: str) -> str:
        """How error messages name a blob (a path or a key)."""
        return name

    # -- configuration -----------------------------------------------------------------------
    def read_resources(self) -> dict[str, dict[str, Any]]:
        return hacfg.parse_resources(self.read_text(RESOURCES), self.location(RESOURCES))

    def write_resources(self, resources: dict[str, dict[str, Any]]) -> None:
        self.write_text(RESOURCES, hacfg.format_resources(resources))

    def read_groups(self) -> dict[str, dict[str, Any]]:
        return hacfg.parse_groups(self.read_text(GROUPS), self.location(GROUPS))

    def write_groups(self, groups: dict[str, dict[str, Any]]) -> None:
        self.write_text(GROUPS, hacfg.format_groups(groups))

    def read_datacenter(self) -> dict[str, Any]:
        return hacfg.parse_datacenter(self.read_text(DATACENTER), self.location(DATACENTER))

    def write_datacenter(self, options: dict[str, Any]) -> None:
        text = hacfg.format_datacenter(options)
        hacfg.parse_datacenter(text, self.location(DATACENTER))  # refuse to store bad options
        self.write_text(DATACENTER, text)

    def ha_options(self) -> dict[str, Any]:
        """``{"shutdown_policy": ..., "max_worker": ...}`` with defaults."""
        return self.read_datacenter()["ha"]

    # -- status ------------------------------------------------------------------------------
    def read_manager_status(self) -> dict[str, Any]:
        return self._read_json(MANAGER_STATUS)

    def write_manager_status(self, status: dict[str, Any]) -> None:
        self._write_json(MANAGER_STATUS, status)

    def read_lrm_status(self, node: str) -> dict[str, Any]:
        hacfg.parse_node_name(node)
        return self._read_json(f"lrm_status/{node}")

    def write_lrm_status(self, node: str, status: dict[str, Any]) -> None:
        hacfg.parse_node_name(node)
        self._write_json(f"lrm_status/{node}", status)

    def lrm_nodes(self) -> list[str]:
        return sorted(self._list("lrm_status"))

    # -- CRM commands ------------------------------------------------------------------------
    def read_crm_commands(self) -> list[str]:
        return [ln for ln in self.read_text(CRM_COMMANDS).splitlines() if ln.strip()]

    def queue_crm_command(self, line: str) -> None:
        """Append one command line (under the lock, so concurrent writers never lose one)."""
        if "\n" in line:
            raise ValueError("a CRM command is a single line")
        with self.locked():
            cmds = self.read_crm_commands()
            cmds.append(line)
            self.write_text(CRM_COMMANDS, "".join(c + "\n" for c in cmds))

    def take_crm_commands(self) -> list[str]:
        """Read and clear the queue in one step (the CRM's side)."""
        with self.locked():
            cmds = self.read_crm_commands()
            if cmds:
                self.write_text(CRM_COMMANDS, "")
            return cmds

    def update(self, name: str, fn: Callable[[str], str]) -> str:
        """Read-modify-write of a text blob under the lock; returns the new text."""
        with self.locked():
            new = fn(self.read_text(name))
            self.write_text(name, new)
            return new

    def snapshot(self) -> dict[str, bytes | None]:
        """Every blob's bytes (tests compare before/after a refused command)."""
        names = [RESOURCES, GROUPS, DATACENTER, MANAGER_STATUS, CRM_COMMANDS]
        names += [f"lrm_status/{n}" for n in self.lrm_nodes()]
        return {n: self._get(n) for n in names}
