"""``ocf``: any installed OCF resource agent as an HA service (``ocf:NAME``).

``NAME`` is a section of ocf.cfg (see :mod:`hafence_ocf.config`) naming the agent and
its parameters. Each action runs the agent with the agent's own timeout from its
meta-data (or the section's ``timeout_*``); per node, ``HA_RSCTMP`` (where agents keep
their state, e.g. Dummy's state file) is ``STATE_DIR/ocf``, so several simulated nodes
on one machine keep separate state.

OCF exit codes map onto hafence's states and ResourceError reasons:

=========================  ==================  ====================================
OCF exit code              status()            start/stop failure reason
=========================  ==================  ====================================
0 success                  running             -
7 not running              stopped             failed (start: still not running)
1 generic, 4 perm, 9       unknown (failed)    failed
2 args, 6 not configured   ResourceError       config
3 unimplemented            ResourceError       not_supported
5 not installed            ResourceError       unavailable
=========================  ==================  ====================================

``unknown`` counts as running for the LRM (a failed monitor may leave a half-running
service behind), so a failed service is stopped before it could start anywhere else.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hafence.errors import ConfigError, ConfigErrors
from hafence.ha.resources import RUNNING, STOPPED, UNKNOWN, ResourceError, ResourceType
from hafence_ocf import agent as ocf
from hafence_ocf.agent import Agent, AgentTimeout, Metadata, Result
from hafence_ocf.config import Definition, agent_of, load_definition

log = logging.getLogger("hafence.ocf")

_REASONS = {
    ocf.OCF_ERR_ARGS: "config",
    ocf.OCF_ERR_CONFIGURED: "config",
    ocf.OCF_ERR_UNIMPLEMENTED: "not_supported",
    ocf.OCF_ERR_INSTALLED: "unavailable",
}


def _one_line(exc: Exception) -> str:
    """A config error as one log line (every error of the file, each with file:line: field)."""
    if isinstance(exc, ConfigErrors):
        return "; ".join(str(e) for e in exc.errors)
    return str(exc)


class OcfType(ResourceType):
    name = "ocf"
    description = "OCF resource agent (resource-agents), defined in ocf.cfg"

    def available(self) -> str | None:
        root = ocf.ocf_root() / "resource.d"
        if not root.is_dir():
            return f"no OCF agents on node {self.node}: {root} missing (install resource-agents)"
        return None

    # -- helpers -----------------------------------------------------------------------
    def _rsctmp(self) -> Path:
        base = self.state_dir
        if base is None:
            base = Path(os.environ.get("HAFENCE_STATE_DIR", "/var/lib/hafence"))
            base = base / "resources" / self.node
        path = base / "ocf"
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def _load(self, rid: str) -> tuple[Definition, Agent]:
        self.require_available(rid)
        try:
            defn = load_definition(rid)
        except (ConfigError, ConfigErrors) as exc:
            raise ResourceError(self.sid(rid), "config", _one_line(exc)) from None
        agent = agent_of(defn)
        if not agent.installed():
            raise ResourceError(
                self.sid(rid), "unavailable",
                f"agent {agent.spec} not installed on node {self.node} ({agent.path})",
            )  # fmt: skip
        return defn, agent

    def _run(self, rid: str, action: str) -> Result:
        defn, agent = self._load(rid)
        try:
            timeout = defn.timeouts.get(action) or agent.metadata().timeout(action)
            params = defn.values()
        except (ConfigError, ValueError, OSError) as exc:
            raise ResourceError(self.sid(rid), "config", str(exc)) from None
        try:
            res = agent.run(action, rid, params, timeout=timeout,
                            extra_env={"HA_RSCTMP": str(self._rsctmp())})  # fmt: skip
        except AgentTimeout as exc:
            raise ResourceError(self.sid(rid), "timeout", str(exc)) from None
        except OSError as exc:
            raise ResourceError(self.sid(rid), "failed", f"{agent.spec} {action}: {exc}") from None
        log.debug("%s: %s %s -> %d", self.sid(rid), agent.spec, action, res.rc)
        return res

    def _fail(self, rid: str, action: str, res: Result) -> ResourceError:
        reason = _REASONS.get(res.rc, "failed")
        what = ocf.RC_NAMES.get(res.rc, f"exit code {res.rc}")
        return ResourceError(self.sid(rid), reason, f"{action}: {what} ({res.last_line})")

    # -- the contract ----------------------------------------------------------------------
    def exists(self, rid: str) -> bool:
        try:
            self._load(rid)
        except ResourceError as exc:
            if exc.reason == "unavailable":
                return False
            raise
        return True

    def status(self, rid: str) -> str:
        res = self._run(rid, "monitor")
        if res.rc in (ocf.OCF_SUCCESS, ocf.OCF_RUNNING_PROMOTED):
            return RUNNING
        if res.rc == ocf.OCF_NOT_RUNNING:
            return STOPPED
        if res.rc in _REASONS:
            raise self._fail(rid, "monitor", res)
        log.warning("%s: monitor failed: %s", self.sid(rid), res.last_line)
        return UNKNOWN

    def start(self, rid: str) -> None:
        # the definition against the meta-data (cached), not the agent's validate-all: an
        # agent validates in its own start (OCF_ERR_CONFIGURED), and Pacemaker does not
        # run validate-all before a start either; ha-manager add runs it (check_config).
        # IPaddr2's validate-all cost 0.5-1.5 s of every failover's outage in the lab.
        self._check_definition(rid)
        state = self.status(rid)
        if state == RUNNING:
            return
        if state == UNKNOWN:  # failed: clean up before starting again (as Pacemaker does)
            self.stop(rid, 0)
        res = self._run(rid, "start")
        if res.rc != ocf.OCF_SUCCESS:
            raise self._fail(rid, "start", res)

    def stop(self, rid: str, timeout: float) -> None:
        # The agent's own stop timeout (meta-data or timeout_stop) bounds the stop.
        res = self._run(rid, "stop")
        if res.rc != ocf.OCF_SUCCESS:
            raise self._fail(rid, "stop", res)

    def _check_definition(self, rid: str) -> Metadata:
        """The definition against the agent's meta-data; the meta-data."""
        defn, agent = self._load(rid)
        try:
            meta = agent.metadata()
            defn.validate(meta)
        except (ConfigError, ConfigErrors, ValueError) as exc:
            raise ResourceError(self.sid(rid), "config", _one_line(exc)) from None
        return meta

    def check_config(self, rid: str) -> None:
        """The definition against the agent's meta-data, then the agent's validate-all."""
        meta = self._check_definition(rid)
        if "validate-all" in meta.actions:
            res = self._run(rid, "validate-all")
            if res.rc != ocf.OCF_SUCCESS:
                raise self._fail(rid, "validate-all", res)
