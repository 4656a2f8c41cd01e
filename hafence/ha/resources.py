"""The HA resource type contract: what the LRM calls to start, stop and watch a service.

A resource type is a plain class named after its SID prefix (``vm``, ``ct``, ``systemd``,
``dummy``...), returned by a plugin's ``hafence_resource_types()`` hook. The LRM makes
one instance per node and calls it with the part of the SID after the colon::

    rt = VmType(node="node1", state_dir=Path("/var/lib/hafence"))
    rt.available()            # None, or why this type cannot work here ("qm not found")
    rt.exists("100")          # is the resource defined on this node?
    rt.status("100")          # RUNNING / STOPPED / UNKNOWN
    rt.start("100")           # returns once started; ResourceError otherwise
    rt.stop("100", timeout=180)   # clean shutdown within timeout, then hard stop
    rt.migrate("100", "node2", online=True)   # NotSupported -> LRM relocates (stop/start)
    rt.check_config("100")    # optional sanity check before a start
    rt.enabled_outside_ha("100")  # True/False/None: would it also start without HA?

The procedure around these calls (status checks, the re-check after a stop, when the
config may move) is the LRM's, once, for every type: ``hafence.ha.agent``. A type only
says what it sees; ``status`` answers UNKNOWN when it cannot tell (a failing status
command, a unit that is ``activating``), and the LRM treats anything but STOPPED as
running. ``migrate`` is a *native* move: it returns once the resource left this node
(for ``online=False`` it stops the resource first); types without one raise
``not_supported`` and the LRM stops the resource, confirms the stop, and moves the
config itself.

The methods are *synchronous and may block* (``qm start`` takes seconds): the LRM runs
each action in a worker thread, at most ``max_worker`` at once (see
``hafence.ha.realenv``). Keeping the contract synchronous makes plugins plain code that
calls commands; the concurrency policy stays in one place.

Every failure is a :class:`ResourceError` with a stable ``reason`` word (``unavailable``,
``not_found``, ``failed``, ``timeout``, ``not_supported``, ``config``), never a bare
exception or an exit code the caller must interpret.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from hafence.errors import HafenceError

log = logging.getLogger(__name__)

RUNNING = "running"
STOPPED = "stopped"
UNKNOWN = "unknown"
STATUSES = (RUNNING, STOPPED, UNKNOWN)

REASONS = ("unavailable", "not_found", "failed", "timeout", "not_supported", "config")

DEFAULT_COMMAND_TIMEOUT = 60.0


class ResourceError(HafenceError):
    """A resource action failed; ``reason`` says why in one stable word."""

    def __init__(self, sid: str, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown ResourceError reason {reason!r}")
        super().__init__(f"{sid}: {message}")
        self.sid = sid
        self.reason = reason
        self.message = message


class ResourceType:
    """Base class of a resource type (see the module docstring).

    ``node`` is the node this instance acts for; ``state_dir`` a directory private to
    that node (several simulated nodes on one machine keep separate state);
    ``command_timeout`` bounds every external command that has no timeout of its own.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(
        self,
        node: str,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
    ) -> None:
        self.node = node
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.command_timeout = command_timeout

    # -- the contract ---------------------------------------------------------------
    def available(self) -> str | None:
        """None when this type can work on this node, else a message saying why not."""
        return None

    def exists(self, rid: str) -> bool:
        raise NotImplementedError

    def status(self, rid: str) -> str:
        """One of RUNNING, STOPPED, UNKNOWN."""
        raise NotImplementedError

    def start(self, rid: str) -> None:
        raise NotImplementedError

    def stop(self, rid: str, timeout: float) -> None:
        raise NotImplementedError

    def migrate(self, rid: str, target: str, online: bool) -> None:
        raise ResourceError(self.sid(rid), "not_supported", f"{self.name} cannot migrate")

    def check_config(self, rid: str) -> None:
        """Raise ResourceError(reason="config") when the resource cannot be started."""

    def enabled_outside_ha(self, rid: str) -> bool | None:
        """Whether the resource also starts without HA (a unit enabled at boot, a guest
        with ``onboot``): then a rebooted node may run it while HA runs it elsewhere.
        None: cannot tell (the default)."""
        return None

    def outside_ha_advice(self, rid: str) -> str:
        """What an admin should do when ``enabled_outside_ha`` is True."""
        return "disable its automatic start outside HA"

    def remove_locks(self, rid: str, locks: Sequence[str], node: str) -> str | None:
        """The master recovers the resource from fenced ``node``: drop a leftover lock
        that would block its start when it is one of ``locks`` (safe once that node was
        reset); the lock removed, or None."""
        return None

    def steal(self, rid: str, fenced_node: str, new_node: str) -> None:
        """Move whatever of the resource is bound to ``fenced_node`` (a guest's config)
        to ``new_node``; the master calls it when it recovers the resource there."""

    def static_stats(self, rid: str) -> dict[str, float] | None:
        """``{"maxcpu": cores, "maxmem": bytes}`` the resource may use at most (maxcpu
        0: no limit), for the static scheduler; None: unknown."""
        return None

    def dynamic_stats(self, rid: str) -> dict[str, float] | None:
        """``{"cpu": cores, "mem": bytes}`` the resource uses now (it runs on this node),
        for the dynamic scheduler; None: unknown."""
        return None

    # -- helpers for subclasses -----------------------------------------------------
    def sid(self, rid: str) -> str:
        return f"{self.name}:{rid}"

    def require_available(self, rid: str) -> None:
        why = self.available()
        if why:
            raise ResourceError(self.sid(rid), "unavailable", why)

    def run(
        self, rid: str, argv: Sequence[str], *, timeout: float | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command for resource ``rid``; typed errors for missing, slow or failing."""
        return run_command(self.sid(rid), argv, timeout=timeout or self.command_timeout,
                           check=check)  # fmt: skip

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.node}>"


def run_command(
    sid: str, argv: Sequence[str], *, timeout: float, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` with the failures mapped onto ResourceError reasons."""
    cmd = " ".join(argv)
    try:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except FileNotFoundError:
        raise ResourceError(sid, "unavailable", f"command not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        msg = f"'{cmd}' did not finish within {timeout:g} s"
        raise ResourceError(sid, "timeout", msg) from None
    except OSError as exc:
        raise ResourceError(sid, "failed", f"'{cmd}': {exc.strerror}") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        msg = detail[-1] if detail else f"exit status {proc.returncode}"
        raise ResourceError(sid, "failed", f"'{cmd}' failed: {msg}")
    return proc


def which(command: str) -> str | None:
    return shutil.which(command)


def split_sid(sid: str) -> tuple[str, str]:
    """``"vm:100"`` -> ``("vm", "100")``; ValueError without a type prefix."""
    rtype, sep, rid = sid.partition(":")
    if not sep or not rtype or not rid:
        raise ValueError(f"invalid service ID '{sid}' (expected TYPE:ID)")
    return rtype, rid


def load_resource_types(
    node: str,
    state_dir: str | os.PathLike[str] | None = None,
    *,
    registry: Any = None,
    **kwargs: Any,
) -> dict[str, ResourceType]:
    """One instance of every resource type the plugins provide, for ``node``.

    A type whose constructor fails is logged and left out (a broken plugin must not stop
    the LRM from managing the other services).
    """
    if registry is None:
        from hafence.plugins import get_registry

        registry = get_registry()
    out: dict[str, ResourceType] = {}
    for name, cls in registry.resource_types().items():
        try:
            out[name] = cls(node, state_dir, **kwargs)
        except Exception as exc:
            log.error("resource type '%s' could not be set up: %r", name, exc)
    return out
