"""``ha-manager``: the Proxmox VE command, on hafence's state store.

Commands and output follow Proxmox's ``ha-manager``. Every change runs under the store's
read-modify-write lock and is fully validated before anything is written, so a refused
command (bad SID, unknown group or node, a state change the CRM forbids) exits non-zero
and leaves every file byte-identical.

The store is ``--store DIR|etcd://HOST:PORT/CLUSTER`` (or ``$HAFENCE_STORE``), else the
embedded directory ``$HAFENCE_HA_DIR`` or ``/etc/hafence/ha``.

Nodes are known from the CRM's ``manager_status`` and the LRMs' status entries. ``migrate``,
``relocate`` and ``crm-command`` need a known target; ``add --node`` and ``groupadd --nodes``
are checked against them once any node is known (a fresh cluster has none yet).
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from hafence.cli import ha_rules
from hafence.errors import ConfigErrors, HafenceError
from hafence.ha import config as hacfg
from hafence.ha.state import format_crm_command
from hafence.store import LockTimeout, Store, StoreUnavailable, open_store
from hafence.store.options import etcd_options, etcd_overrides

STATE_CHOICES = [*hacfg.SERVICE_STATES, "enabled"]
RESOURCE_DELETABLE = ("group", "max_restart", "max_relocate", "failback", "comment", "state")
GROUP_DELETABLE = ("restricted", "nofailback", "comment")


class Ctx:
    def __init__(
        self, spec: str | None, cluster: str | None, etcd: dict[str, Any] | None = None
    ) -> None:
        self.spec = spec
        self.cluster = cluster
        self.etcd = etcd
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            try:
                self._store = open_store(self.spec, cluster=self.cluster, etcd=self.etcd)
            except ValueError as exc:
                raise click.ClickException(str(exc)) from None
        return self._store


pass_ctx = click.make_pass_decorator(Ctx)


@contextmanager
def _errors() -> Iterator[None]:
    """Store and config problems become one clear message and exit status 1."""
    try:
        yield
    except ConfigErrors as exc:
        raise click.ClickException(str(exc)) from None
    except (StoreUnavailable, LockTimeout, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # e.g. no permission on /etc/hafence/ha
        raise click.ClickException(f"{exc.filename or 'store'}: {exc.strerror or exc}") from None


def _fail(msg: str) -> None:
    raise click.ClickException(msg)


def _sid(text: str) -> str:
    try:
        return hacfg.parse_sid(text)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _value(parse: Callable[[str], Any], text: str, name: str) -> Any:
    try:
        return parse(text)
    except ValueError as exc:
        raise click.ClickException(f"{name}: {exc}") from None


def _manager_status(store: Store) -> dict[str, Any]:
    """The manager status, checked; a damaged one is a warning (the master rebuilds it)
    and reads as empty, so no command is blocked by it."""
    from hafence.ha.statefile import StateFileError, check_manager_status
    from hafence.store.base import MANAGER_STATUS

    where = store.location(MANAGER_STATUS)
    try:
        try:
            data = store.read_manager_status()
        except ValueError as exc:  # not JSON, not UTF-8
            raise StateFileError(where, "", f"unreadable: {exc}") from None
        return check_manager_status(data, where)
    except StateFileError as exc:
        click.echo(f"warning: manager status damaged, ignoring it: {exc}", err=True)
        return {"node_status": {}, "service_status": {}}


def _cluster_nodes(store: Store, ms: dict[str, Any]) -> set[str]:
    return set(ms.get("node_status", {})) | set(store.lrm_nodes())


def _check_node(node: str, known: set[str], strict: bool) -> None:
    _value(hacfg.parse_node_name, node, "node")
    if (strict or known) and node not in known:
        _fail(f"unknown node '{node}' (cluster nodes: {', '.join(sorted(known)) or 'none'})")


def _check_not_error(sid: str, ms: dict[str, Any], new_state: str | None) -> None:
    """The CRM only leaves ``error`` through ``disabled``: refuse anything else meanwhile."""
    ss = ms.get("service_status", {}).get(sid)
    if ss and ss.get("state") == "error" and new_state != "disabled":
        _fail(f"service '{sid}' in error state, must be disabled and fixed first")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    "spec",
    envvar="HAFENCE_STORE",
    metavar="DIR|etcd://HOST:PORT/CLUSTER",
    help="State store (default: $HAFENCE_HA_DIR or /etc/hafence/ha).",
)
@click.option("--cluster", envvar="HAFENCE_CLUSTER", help="etcd key prefix (cluster name).")
@etcd_options
@click.pass_context
def cli(ctx: click.Context, spec: str | None, cluster: str | None, **etcd: Any) -> None:
    """High-availability manager (Proxmox VE ha-manager compatible)."""
    ctx.obj = Ctx(spec, cluster, etcd_overrides(etcd))


# -- resources -------------------------------------------------------------------------------
def _resource_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(
        [
            click.option("--state", type=click.Choice(STATE_CHOICES), help="Requested state."),
            click.option("--group", help="HA group identifier."),
            click.option("--max_restart", "max_restart", type=click.IntRange(0, 10)),
            click.option("--max_relocate", "max_relocate", type=click.IntRange(0, 10)),
            click.option("--failback", type=click.BOOL, help="Move back to a preferred node."),
            click.option("--comment", help="Description."),
            click.option("--node", help="Node the service runs on (hafence extension)."),
        ]
    ):
        f = opt(f)
    return f


def _apply_resource(conf: dict[str, Any], groups: dict[str, Any], **opts: Any) -> None:
    if opts.get("state") is not None:
        conf["state"] = hacfg.parse_state(opts["state"])
    if opts.get("group") is not None:
        group = _value(hacfg.parse_group_name, opts["group"], "group")
        if group not in groups:
            if not groups:
                _fail(f"unknown group '{group}' (HA groups have been migrated to rules: "
                      "'ha-manager rules config')")  # fmt: skip
            _fail(f"unknown group '{group}'")
        conf["group"] = group
    for key in ("max_restart", "max_relocate", "failback"):
        if opts.get(key) is not None:
            conf[key] = opts[key]
    if opts.get("comment") is not None:
        conf["comment"] = _value(hacfg.parse_comment, opts["comment"], "comment") or None


@cli.command()
@click.argument("sid")
@click.option("--type", "rtype", help="Resource type (when SID has no TYPE: prefix).")
@_resource_options
@pass_ctx
def add(c: Ctx, sid: str, rtype: str | None, node: str | None, **opts: Any) -> None:
    """Create a new HA resource."""
    sid = _sid(f"{rtype}:{sid}" if rtype and ":" not in sid else sid)
    store = c.store
    with _errors(), store.locked():
        resources, groups = store.read_resources(), store.read_groups()
        ms = _manager_status(store)
        if sid in resources:
            _fail(f"resource ID '{sid}' already defined")
        node = node or platform.node().split(".")[0]
        _check_node(node, _cluster_nodes(store, ms), strict=False)
        conf = hacfg.default_resource()
        conf["node"] = node
        _apply_resource(conf, groups, **opts)
        _check_definition(sid)
        resources[sid] = conf
        store.write_resources(resources)
    _warn_outside_ha(sid)


def _check_definition(sid: str) -> None:
    """Refuse a service whose definition is wrong everywhere (an ``ocf:`` service missing
    from ocf.cfg, or with a parameter its agent does not take). What only this machine
    lacks (the unit, the guest, the agent) is the LRM's to find on the node."""
    from hafence.ha.resources import ResourceError, load_resource_types, split_sid

    rtype, rid = split_sid(sid)
    plugin = load_resource_types(platform.node().split(".")[0]).get(rtype)
    if plugin is None:
        return
    try:
        plugin.check_config(rid)
    except ResourceError as exc:
        if exc.reason == "config":
            _fail(str(exc))


def _warn_outside_ha(sid: str) -> None:
    """A service that also starts without HA (enabled at boot) can run twice: say so."""
    from hafence.ha.resources import ResourceError, load_resource_types, split_sid

    here = platform.node().split(".")[0]
    rtype, rid = split_sid(sid)
    try:
        plugin = load_resource_types(here).get(rtype)
        enabled = plugin.enabled_outside_ha(rid) if plugin is not None else None
    except ResourceError:
        enabled = None
    if plugin is not None and enabled:
        click.echo(
            f"warning: {sid} also starts outside HA on {here}: a node that boots may run "
            f"it while HA runs it elsewhere; {plugin.outside_ha_advice(rid)} on every node",
            err=True,
        )


@cli.command("set")
@click.argument("sid")
@_resource_options
@click.option("--delete", help="Comma-separated properties to reset to their default.")
@pass_ctx
def set_cmd(c: Ctx, sid: str, node: str | None, delete: str | None, **opts: Any) -> None:
    """Update resource configuration."""
    sid = _sid(sid)
    store = c.store
    with _errors(), store.locked():
        resources, groups = store.read_resources(), store.read_groups()
        ms = _manager_status(store)
        if sid not in resources:
            _fail(f"no such resource '{sid}'")
        conf = dict(resources[sid])
        dflt = hacfg.default_resource()
        deleted = [k.strip() for k in (delete or "").split(",") if k.strip()]
        for key in deleted:
            if key not in RESOURCE_DELETABLE:
                _fail(f"--delete: cannot delete property '{key}'")
            if opts.get(key) is not None:
                _fail(f"--delete: property '{key}' is both set and deleted")
            conf[key] = dflt[key]
        _apply_resource(conf, groups, **opts)
        if node is not None and node != conf["node"]:
            # once the CRM tracks a service, only it may move it (else two nodes could run it)
            if sid in ms.get("service_status", {}):
                _fail(f"service '{sid}' is managed by the CRM: use 'ha-manager migrate' or "
                      "'ha-manager relocate' to move it")  # fmt: skip
            _check_node(node, _cluster_nodes(store, ms), strict=False)
            conf["node"] = node
        if opts.get("state") is not None or "state" in deleted:
            _check_not_error(sid, ms, conf["state"])
        resources[sid] = conf
        store.write_resources(resources)


@cli.command()
@click.argument("sid")
@click.option("--purge/--no-purge", default=True, show_default=True,
              help="Also remove it from the rules naming it (a rule left empty goes).")  # fmt: skip
@pass_ctx
def remove(c: Ctx, sid: str, purge: bool) -> None:
    """Delete resource configuration."""
    sid = _sid(sid)
    store = c.store
    with _errors(), store.locked():
        resources = store.read_resources()
        if sid not in resources:
            _fail(f"no such resource '{sid}'")
        if purge:
            ha_rules.read_rules(store)  # a damaged rules.cfg refuses before any write
        del resources[sid]
        store.write_resources(resources)
        if purge:
            ha_rules.purge_resource(store, sid)


def _print_records(header: str, rec: dict[str, Any]) -> None:
    click.echo(header)
    for key in sorted(rec):
        click.echo(f"\t{key} {rec[key]}")
    click.echo()


@cli.command()
@click.option("--type", "rtype", help="Only list resources of this type.")
@pass_ctx
def config(c: Ctx, rtype: str | None) -> None:
    """List HA resources."""
    with _errors():
        resources = c.store.read_resources()
    for sid in sorted(resources):
        if rtype and sid.partition(":")[0] != rtype:
            continue
        conf = resources[sid]
        dflt = hacfg.default_resource()
        rec = {k: v for k, v in conf.items() if v is not None and (k == "state" or v != dflt[k])}
        _print_records(sid, rec)


# -- groups ----------------------------------------------------------------------------------
def _apply_group(
    conf: dict[str, Any],
    known: set[str],
    nodes: str | None,
    restricted: bool | None,
    nofailback: bool | None,
    comment: str | None,
) -> None:
    if nodes is not None:
        parsed = _value(hacfg.parse_nodes, nodes, "nodes")
        for n in parsed:
            _check_node(n, known, strict=False)
        conf["nodes"] = parsed
    if restricted is not None:
        conf["restricted"] = restricted
    if nofailback is not None:
        conf["nofailback"] = nofailback
    if comment is not None:
        conf["comment"] = _value(hacfg.parse_comment, comment, "comment") or None


_BOOL = click.BOOL


@cli.command()
@click.argument("group")
@click.option("--nodes", required=True, help="node[:priority],...")
@click.option("--restricted", type=_BOOL)
@click.option("--nofailback", type=_BOOL)
@click.option("--comment")
@click.option("--type", "gtype", type=click.Choice(["group"]), default="group", hidden=True)
@pass_ctx
def groupadd(c: Ctx, group: str, gtype: str, **opts: Any) -> None:
    """Create a new HA group."""
    group = _value(hacfg.parse_group_name, group, "group")
    store = c.store
    with _errors(), store.locked():
        groups = store.read_groups()
        if group in groups:
            _fail(f"group '{group}' already defined")
        conf = hacfg.default_group()
        _apply_group(conf, _cluster_nodes(store, _manager_status(store)), **opts)
        groups[group] = conf
        store.write_groups(groups)


@cli.command()
@click.argument("group")
@click.option("--nodes", help="node[:priority],...")
@click.option("--restricted", type=_BOOL)
@click.option("--nofailback", type=_BOOL)
@click.option("--comment")
@click.option("--delete", help="Comma-separated properties to reset to their default.")
@pass_ctx
def groupset(c: Ctx, group: str, delete: str | None, **opts: Any) -> None:
    """Update HA group configuration."""
    group = _value(hacfg.parse_group_name, group, "group")
    store = c.store
    with _errors(), store.locked():
        groups = store.read_groups()
        if group not in groups:
            _fail(f"no such group '{group}'")
        conf = dict(groups[group])
        dflt = hacfg.default_group()
        for key in (k.strip() for k in (delete or "").split(",") if k.strip()):
            if key not in GROUP_DELETABLE:
                _fail(f"--delete: cannot delete property '{key}'")
            conf[key] = dflt[key]
        _apply_group(conf, _cluster_nodes(store, _manager_status(store)), **opts)
        groups[group] = conf
        store.write_groups(groups)


@cli.command()
@click.argument("group")
@pass_ctx
def groupremove(c: Ctx, group: str) -> None:
    """Delete HA group configuration (refused while a resource uses it)."""
    store = c.store
    with _errors(), store.locked():
        groups, resources = store.read_groups(), store.read_resources()
        if group not in groups:
            _fail(f"no such group '{group}'")
        users = sorted(sid for sid, conf in resources.items() if conf.get("group") == group)
        if users:
            _fail(f"group '{group}' is still used by {', '.join(users)}")
        del groups[group]
        store.write_groups(groups)


@cli.command()
@pass_ctx
def groupconfig(c: Ctx) -> None:
    """List HA groups."""
    with _errors():
        groups = c.store.read_groups()
    for name in sorted(groups):
        conf = groups[name]
        rec: dict[str, Any] = {"nodes": hacfg.format_nodes(conf["nodes"])}
        for key in ("restricted", "nofailback"):
            if conf.get(key):
                rec[key] = 1
        if conf.get("comment"):
            rec["comment"] = conf["comment"]
        _print_records(f"group: {name}", rec)


# -- status ----------------------------------------------------------------------------------
def _age_status(now: float, ts: float, alive: bool = False) -> str:
    """``alive``: the daemon holds its lease. The store writes a timestamp that alone
    changed only every ``status_refresh`` seconds, so the lease is the liveness signal."""
    diff = now - ts
    if diff > 30 and not alive:
        return "old timestamp - dead?"
    if diff < -2:
        return "detected time drift!"
    return "active"


def _lrm_status_text(now: float, lrm: dict[str, Any], alive: bool = False) -> str:
    if not lrm.get("timestamp"):
        return "unable to read lrm status"
    text = _age_status(now, lrm["timestamp"], alive)
    mode = lrm.get("mode") or "active"
    if text == "active":
        state = lrm.get("state") or "unknown"
        if mode != "active":
            text = f"{mode} mode"
        else:
            text = "idle" if state == "wait_for_agent_lock" else state
    elif mode == "maintenance":
        text = "maintenance mode"
    return f"{text}, {time.ctime(lrm['timestamp'])}"


def _fencing_mode(ms: dict[str, Any], crm_active: bool) -> str:
    """Proxmox's ``fencing`` line: whether the master holds its watchdog (armed), none is
    active (standby), or the HA stack is disarmed."""
    disarm = ms.get("disarm")
    if isinstance(disarm, dict):
        state, mode = disarm.get("state", "unknown"), disarm.get("mode", "unknown")
        wd = "released" if state == "disarmed" else "active"
        return f"{state}, resource mode: {mode} (CRM watchdog {wd})"
    return "armed (CRM watchdog active)" if crm_active else "standby (CRM watchdog standby)"


def _fence_text(now: float, info: Any) -> str:
    """One node's fence progress (the master's ``fencing`` entry): what it waits for, the
    chain with each device's kind, the attempt, the last error, how long."""
    if not isinstance(info, dict):
        return "fencing"
    parts = [str(info.get("step") or info.get("state") or "fencing")]
    devices = info.get("devices")
    if info.get("state") == "confirmed" and isinstance(devices, list):
        kind = "power" if info.get("power") else "fabric"
        parts.append(f"by {', '.join(map(str, devices))} ({kind})")
        if info.get("lock"):
            parts.append(f"agent lock: {info['lock']}")
    else:
        levels = [lv for lv in info.get("levels") or [] if isinstance(lv, dict)]
        chain = " / ".join(
            ", ".join(f"{d.get('name')} ({d.get('kind') or '?'})" for d in lv.get("devices") or []
                      if isinstance(d, dict))
            for lv in levels
        )  # fmt: skip
        if chain:
            parts.append(f"chain {chain}")
        if isinstance(info.get("attempt"), int):
            parts.append(f"attempt {info['attempt']}")
        if info.get("error"):
            parts.append(f"last error {info['error']}")
    since = info.get("since")
    if isinstance(since, int | float) and not isinstance(since, bool):
        parts.append(f"since {max(0, round(now - since))}s")
    return ", ".join(parts)


@cli.command()
@click.option("--verbose", is_flag=True, help="Also print the full cluster state (JSON).")
@pass_ctx
def status(c: Ctx, verbose: bool) -> None:
    """Display HA manager status."""
    store = c.store
    node = platform.node().split(".")[0]
    quorate = store.quorate()
    click.echo("quorum OK" if quorate else f"quorum No quorum on node '{node}'!")
    with _errors():
        ms = _manager_status(store)
        resources = store.read_resources()
        lrm_nodes = sorted(_cluster_nodes(store, ms))
        lrms = {n: store.read_lrm_status(n) for n in lrm_nodes}
        from hafence.ha.realenv import node_alive_lease
        from hafence.ha.state import MANAGER_LOCK

        master_alive = bool(ms.get("master_node")) and (
            store.lease_owner(MANAGER_LOCK) == ms["master_node"]
        )
        alive = {n: store.lease_owner(node_alive_lease(n)) == n for n in lrm_nodes}
    now = time.time()
    crm_active = False
    if ms.get("master_node") and ms.get("timestamp"):
        age = _age_status(now, ms["timestamp"], master_alive)
        crm_active = age == "active"
        click.echo(f"master {ms['master_node']} ({age}, {time.ctime(ms['timestamp'])})")
    click.echo(f"fencing {_fencing_mode(ms, crm_active)}")
    for n in lrm_nodes:
        click.echo(f"lrm {n} ({_lrm_status_text(now, lrms[n], alive[n])})")
    for n, info in sorted((ms.get("fencing") or {}).items()):
        click.echo(f"fence {n} ({_fence_text(now, info)})")
    services = ms.get("service_status", {})
    for sid in sorted(resources):
        conf, ss = resources[sid], services.get(sid)
        if ss:
            state, where = ss.get("state", "unknown"), ss.get("node") or conf.get("node")
        else:
            state = "ignored" if conf["state"] == "ignored" else "queued"
            where = conf.get("node")
        click.echo(f"service {sid} ({where}, {state})")
    if verbose:
        click.echo("full cluster state:")
        full = {"manager_status": ms, "lrm_status": lrms, "quorum": {"quorate": int(quorate)}}
        click.echo(json.dumps(full, indent=4, sort_keys=True))


# -- CRM commands ----------------------------------------------------------------------------
def _queue_move(c: Ctx, kind: str, sid: str, node: str) -> None:
    sid = _sid(sid)
    store = c.store
    with _errors(), store.locked():
        resources, ms = store.read_resources(), _manager_status(store)
        if sid not in resources:
            _fail(f"service '{sid}' is not HA managed")
        _check_node(node, _cluster_nodes(store, ms), strict=True)
        _check_not_error(sid, ms, None)
        together, blocking = _motion_info(store, ms, sid, node)
        if blocking:
            _fail(f"cannot {kind} resource '{sid}' to node '{node}':\n\n" + "".join(
                f"- resource '{b}' on target node '{node}' in negative affinity with "
                f"resource '{sid}'\n" for b in blocking))  # fmt: skip
        store.queue_crm_command(f"{kind} {sid} {node}")
    for csid in together:
        click.echo(f"also {kind} resource '{csid}' in positive affinity with resource '{sid}' "
                   f"to target node '{node}'")  # fmt: skip


def _motion_info(
    store: Store, ms: dict[str, Any], sid: str, node: str
) -> tuple[list[str], list[str]]:
    """``(peers moving along, negative peers blocking NODE)`` by the resource-affinity
    rules, as the master applies them."""
    from hafence.ha.select import blocking_peers

    ss = ms.get("service_status") or {}
    compiled = ha_rules.compiled_rules(store, sorted(ms.get("node_status") or {}))
    positive = compiled.affinitive(sid)[0]
    together = [c for c in sorted(positive) if c in ss and ss[c].get("state") != "ignored"]
    return together, blocking_peers(compiled, sid, ss, node)


@cli.command()
@click.argument("sid")
@click.argument("node")
@pass_ctx
def migrate(c: Ctx, sid: str, node: str) -> None:
    """Request resource migration (online) to another node."""
    _queue_move(c, "migrate", sid, node)


@cli.command()
@click.argument("sid")
@click.argument("node")
@pass_ctx
def relocate(c: Ctx, sid: str, node: str) -> None:
    """Request resource relocation (stop, move, start) to another node."""
    _queue_move(c, "relocate", sid, node)


@cli.group("crm-command")
def crm_command() -> None:
    """Send a command to the cluster resource manager."""


@crm_command.command("migrate")
@click.argument("sid")
@click.argument("node")
@pass_ctx
def crm_migrate(c: Ctx, sid: str, node: str) -> None:
    """Migrate a resource to NODE."""
    _queue_move(c, "migrate", sid, node)


@crm_command.command("relocate")
@click.argument("sid")
@click.argument("node")
@pass_ctx
def crm_relocate(c: Ctx, sid: str, node: str) -> None:
    """Relocate a resource to NODE."""
    _queue_move(c, "relocate", sid, node)


@crm_command.command("stop")
@click.argument("sid")
@click.argument("timeout", type=click.IntRange(min=0))
@pass_ctx
def crm_stop(c: Ctx, sid: str, timeout: int) -> None:
    """Stop a resource; after TIMEOUT seconds it is stopped forcefully (0: at once)."""
    sid = _sid(sid)
    store = c.store
    with _errors(), store.locked():
        resources, ms = store.read_resources(), _manager_status(store)
        if sid not in resources:
            _fail(f"service '{sid}' is not HA managed")
        _check_not_error(sid, ms, None)
        store.queue_crm_command(f"stop {sid} {timeout}")


@crm_command.command("node-maintenance")
@click.argument("action", type=click.Choice(["enable", "disable"]))
@click.argument("node")
@pass_ctx
def crm_node_maintenance(c: Ctx, action: str, node: str) -> None:
    """Put NODE into maintenance mode (enable) or take it out (disable)."""
    store = c.store
    with _errors(), store.locked():
        ms = _manager_status(store)
        _check_node(node, _cluster_nodes(store, ms), strict=True)
        if action == "enable" and ms.get("disarm"):
            _fail("the HA stack is disarmed: re-arm it first ('ha-manager crm-command arm-ha')")
        store.queue_crm_command(f"{action}-node-maintenance {node}")


@crm_command.command("disarm-ha")
@click.argument("mode", type=click.Choice(["freeze", "ignore"]))
@pass_ctx
def crm_disarm(c: Ctx, mode: str) -> None:
    """Disarm the HA stack for maintenance of HA itself: every LRM and the CRM release
    their watchdogs; services are frozen (freeze) or left alone untracked (ignore)."""
    store = c.store
    with _errors(), store.locked():
        store.queue_crm_command(f"disarm-ha {mode}")


@crm_command.command("fence-ack")
@click.argument("node")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def crm_fence_ack(c: Ctx, node: str, yes: bool) -> None:
    """Confirm by hand that NODE is powered off, when its fence device cannot (its BMC
    died with it): the master then recovers NODE's services elsewhere. Refused while
    NODE is reachable. If NODE still runs, its services run twice: check first."""
    from hafence.ha.realenv import node_alive_lease

    store = c.store
    with _errors():
        ms = _manager_status(store)
        _check_node(node, _cluster_nodes(store, ms), strict=True)
        if store.lease_owner(node_alive_lease(node)) == node:
            _fail(f"node '{node}' is reachable (its membership lease is alive): it is not off")
        state = ms["node_status"].get(node)
        if state in ("online", "maintenance"):
            _fail(f"node '{node}' is {state} for the master: it is not off")
    if not yes:
        click.confirm(
            f"Is node '{node}' powered off, and will it stay off? Its HA services will be "
            "started on other nodes",
            abort=True,
        )
    who = f"{_user()}@{platform.node().split('.')[0]}"
    with _errors(), store.locked():
        store.queue_crm_command(format_crm_command("fence-ack", node, who, int(time.time())))
    click.echo(f"fence-ack of node '{node}' by {who} queued for the master")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return f"uid{os.getuid()}"


@crm_command.command("arm-ha")
@pass_ctx
def crm_arm(c: Ctx) -> None:
    """Re-arm a disarmed HA stack."""
    store = c.store
    with _errors(), store.locked():
        store.queue_crm_command("arm-ha")


# -- datacenter options ----------------------------------------------------------------------
@cli.group("options")
def options() -> None:
    """Datacenter HA options (datacenter.cfg): ha.shutdown_policy, ha.max_worker, crs.ha
    (basic|static|dynamic), crs.ha-rebalance-on-start, crs.ha-auto-rebalance ..."""


@options.command("show")
@pass_ctx
def options_show(c: Ctx) -> None:
    """Print the datacenter options (JSON)."""
    with _errors():
        click.echo(hacfg.format_datacenter(c.store.read_datacenter()), nl=False)


@options.command("set")
@click.argument("assignments", nargs=-1, metavar="SECTION.KEY=VALUE...")
@click.option("--delete", help="Comma-separated SECTION.KEY to remove.")
@pass_ctx
def options_set(c: Ctx, assignments: tuple[str, ...], delete: str | None) -> None:
    """Set (or --delete) datacenter options, e.g. 'crs.ha=static crs.ha-auto-rebalance=1';
    the whole file is checked before it is written."""
    store = c.store
    with _errors(), store.locked():
        store.read_datacenter()  # a damaged file is refused, naming its line
        text = store.read_text("datacenter.cfg")
        data = json.loads(text) if text.strip() else {}
        for item in (d.strip() for d in (delete or "").split(",") if d.strip()):
            section, _, key = item.partition(".")
            if key not in (data.get(section) or {}):
                _fail(f"--delete: '{item}' is not set")
            del data[section][key]
        for item in assignments:
            path, sep, raw = item.partition("=")
            section, _, key = path.partition(".")
            if not sep or not section or not key:
                _fail(f"'{item}': expected SECTION.KEY=VALUE")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw  # a word: a string
            if not isinstance(data.setdefault(section, {}), dict):
                _fail(f"'{section}' is not a section")
            data[section][key] = value
        new = hacfg.format_datacenter(data)
        hacfg.parse_datacenter(new, store.location("datacenter.cfg"))  # names what is wrong
        store.write_text("datacenter.cfg", new)


# -- the cluster's fence.cfg -------------------------------------------------------------------
@cli.group("fence-config")
def fence_config() -> None:
    """The cluster's fence.cfg, kept in the store: the same for every CRM
    ('hafence-crm --fence-config store')."""


@fence_config.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_ctx
def fence_config_import(c: Ctx, file: Path) -> None:
    """Check FILE and make it the cluster's fence.cfg. Secrets must be references
    (password_file=, password_env=), the same on every node: the store is shared."""
    from hafence.fence import check_drivers, load_fence_config
    from hafence.fence.config import is_secret_key
    from hafence.ha.fencerun import FENCE_CFG

    with _errors():
        try:
            cfg = load_fence_config(file)
            check_drivers(cfg)
        except HafenceError as exc:
            raise click.ClickException(str(exc)) from None
        inline = [
            f"{file}:{line}: {key}"
            for line, key in _fence_args(cfg)
            if is_secret_key(key) and not key.endswith(("_file", "_env", "_script"))
        ]
        if inline:
            _fail("a secret in the shared store; use password_file= (the same path on every "
                  "node) or password_env= instead:\n  " + "\n  ".join(inline))  # fmt: skip
        text = file.read_text()
        with c.store.locked():
            c.store.write_text(FENCE_CFG, text)
    click.echo(f"{file} is now the cluster's fence.cfg ({c.store.location(FENCE_CFG)}); run "
               "every hafence-crm with --fence-config store")  # fmt: skip


def _fence_args(cfg: Any) -> Iterator[tuple[int, str]]:
    for dev in cfg.devices.values():
        for sub in dev.subdevices.values():
            yield from ((sub.line, k) for k, _ in sub.args)
            for conn in sub.connections.values():
                yield from ((conn.line, k) for k, _ in conn.args)


@fence_config.command("show")
@pass_ctx
def fence_config_show(c: Ctx) -> None:
    """Print the cluster's fence.cfg (nothing when it has none)."""
    from hafence.ha.fencerun import FENCE_CFG

    with _errors():
        click.echo(c.store.read_text(FENCE_CFG), nl=False)


ha_rules.register(
    cli,
    {"pass_ctx": pass_ctx, "errors": _errors, "manager_status": _manager_status,
     "cluster_nodes": _cluster_nodes},
)  # fmt: skip


def main() -> None:
    cli()
