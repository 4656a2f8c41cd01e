"""``ha-manager rules add|set|remove|config|list``: HA rules, as Proxmox 9's commands.

Every change is checked before anything is written, under the store's lock: the rule's
properties (``hafence.ha.config.parse_rules`` reads the new file back), that its
resources are HA resources and its nodes cluster nodes, and that the whole rule set stays
feasible (``hafence.ha.rules.check_feasibility``, groups included as rules). A refused
command names the rule and the property and changes no byte; ``rules.cfg`` is written
atomically.

Rules cannot be changed while HA groups exist: the master migrates them to rules first
(every node must read rules), as Proxmox 9 does.
"""

from __future__ import annotations

import json
from typing import Any

import click

from hafence.ha import config as hacfg
from hafence.ha import rules as rl
from hafence.store import Store

RULES_CFG = "rules.cfg"
TYPES = list(rl.RULE_TYPES)
DELETABLE = {"node-affinity": ("strict", "disable", "comment"),
             "resource-affinity": ("disable", "comment")}  # fmt: skip


def read_rules(store: Store) -> dict[str, dict[str, Any]]:
    """rules.cfg from the store (ConfigErrors with file and line when it is damaged)."""
    return hacfg.parse_rules(store.read_text(RULES_CFG), store.location(RULES_CFG))


def compiled_rules(store: Store, nodes: list[str]) -> rl.CompiledRules:
    """The rules as the master compiles them (groups included, infeasible ones left out)."""
    rules = rl.RuleSet.from_config(read_rules(store))
    rl.migrate_groups_to_rules(rules, store.read_groups(), store.read_resources())
    rl.transform(rules, nodes)
    return rl.compile_rules(rules, nodes)


def _errors_of(store: Store, rules: dict[str, dict[str, Any]], nodes: list[str]) -> rl.Errors:
    full = rl.RuleSet.from_config(rules)
    rl.migrate_groups_to_rules(full, store.read_groups(), store.read_resources())
    return rl.check_feasibility(full, nodes)


def _options(f: Any) -> Any:
    for opt in reversed(
        [
            click.option("--resources", help="HA resources: TYPE:ID,..."),
            click.option("--nodes", help="node-affinity: node[:priority],..."),
            click.option("--strict", type=click.BOOL,
                         help="node-affinity: only on these nodes (else: preferred)."),
            click.option("--affinity", type=click.Choice(["positive", "negative"]),
                         help="resource-affinity: keep together or apart."),
            click.option("--disable", type=click.BOOL, help="Whether the rule is disabled."),
            click.option("--comment", help="Description."),
        ]
    ):  # fmt: skip
        f = opt(f)
    return f


def _apply(rtype: str, rule: dict[str, Any], opts: dict[str, Any]) -> None:
    """Set the given options on ``rule`` (one of ``rtype``), parsed as rules.cfg does."""
    wrong = {"node-affinity": ("affinity",), "resource-affinity": ("nodes", "strict")}[rtype]
    for key in wrong:
        if opts.get(key) is not None:
            raise click.ClickException(f"--{key}: not a property of {rtype} rules")
    if opts.get("resources") is not None:
        rule["resources"] = _parse(hacfg.parse_sid_list, opts["resources"], "resources")
    if opts.get("nodes") is not None:
        rule["nodes"] = _parse(hacfg.parse_nodes, opts["nodes"], "nodes")
    if opts.get("strict") is not None:
        rule["strict"] = opts["strict"]
    if opts.get("affinity") is not None:
        rule["affinity"] = opts["affinity"]
    if opts.get("disable") is not None:
        if opts["disable"]:
            rule["disable"] = True
        else:
            rule.pop("disable", None)  # a rule with any 'disable' is disabled
    if opts.get("comment") is not None:
        comment = _parse(hacfg.parse_comment, opts["comment"], "comment")
        if comment:
            rule["comment"] = comment
        else:
            rule.pop("comment", None)


def _parse(fn: Any, text: str, name: str) -> Any:
    try:
        return fn(text)
    except ValueError as exc:
        raise click.ClickException(f"--{name}: {exc}") from None


def _check(
    store: Store,
    rid: str,
    rules: dict[str, dict[str, Any]],
    known_nodes: set[str],
    manager_nodes: list[str],
) -> None:
    rule = rules[rid]
    rtype = rule["type"]
    required = ("resources", "nodes") if rtype == "node-affinity" else ("resources", "affinity")
    for key in required:
        if not rule.get(key):
            raise click.ClickException(f"rule '{rid}': missing --{key}")
    resources = store.read_resources()
    unmanaged = sorted(s for s in rule["resources"] if s not in resources)
    if unmanaged:
        raise click.ClickException(f"cannot use unmanaged resource(s) {', '.join(unmanaged)}.")
    if rtype == "node-affinity" and known_nodes:
        missing = sorted(n for n in rule["nodes"] if n not in known_nodes)
        if missing:
            raise click.ClickException(f"cannot use non-existent node(s) {', '.join(missing)}.")
    errors = _errors_of(store, rules, manager_nodes).get(rid)
    if errors:
        lines = [f"{opt}: {', '.join(msgs)}" for opt, msgs in sorted(errors.items())]
        raise click.ClickException(f"Rule '{rid}' is invalid.\n" + "\n".join(lines))


def _write(store: Store, rules: dict[str, dict[str, Any]]) -> None:
    try:
        text = rl.format_rules(rules)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    store.write_text(RULES_CFG, text)


def _check_and_write(
    store: Store, rule: str, rules: dict[str, dict[str, Any]], helpers: dict[str, Any]
) -> None:
    ms = helpers["manager_status"](store)
    known = helpers["cluster_nodes"](store, ms)
    _check(store, rule, rules, known, sorted(ms["node_status"]))
    _write(store, rules)


def _require_migrated_groups(store: Store, what: str) -> None:
    if store.read_groups():
        raise click.ClickException(
            f"cannot {what} ha rule: ha groups have not been migrated yet (the master "
            "migrates them to rules once every node runs a version that reads rules)"
        )


def register(cli: click.Group, ctx_helpers: dict[str, Any]) -> None:
    """Add the ``rules`` group to ``ha-manager``'s ``cli`` (helpers: pass_ctx, _errors,
    _manager_status, _cluster_nodes)."""
    pass_ctx = ctx_helpers["pass_ctx"]
    errors = ctx_helpers["errors"]
    manager_status = ctx_helpers["manager_status"]

    @cli.group("rules")
    def rules_group() -> None:
        """HA rules: node affinity and resource affinity (Proxmox 9)."""

    @rules_group.command("add")
    @click.argument("rtype", metavar="TYPE", type=click.Choice(TYPES))
    @click.argument("rule")
    @_options
    @pass_ctx
    def add(c: Any, rtype: str, rule: str, **opts: Any) -> None:
        """Create HA rule RULE of TYPE."""
        if not hacfg.RULE_ID.match(rule):
            raise click.ClickException(f"invalid rule ID '{rule}' (letters, digits, '-', '_')")
        store = c.store
        with errors(), store.locked():
            _require_migrated_groups(store, "create")
            rules = read_rules(store)
            if rule in rules:
                raise click.ClickException(f"HA rule '{rule}' already defined")
            new: dict[str, Any] = {"type": rtype}
            _apply(rtype, new, opts)
            rules[rule] = new
            _check_and_write(store, rule, rules, ctx_helpers)

    @rules_group.command("set")
    @click.argument("rtype", metavar="TYPE", type=click.Choice(TYPES))
    @click.argument("rule")
    @_options
    @click.option("--delete", help="Comma-separated properties to remove.")
    @pass_ctx
    def set_cmd(c: Any, rtype: str, rule: str, delete: str | None, **opts: Any) -> None:
        """Update HA rule RULE."""
        store = c.store
        with errors(), store.locked():
            _require_migrated_groups(store, "update")
            rules = read_rules(store)
            if rule not in rules:
                raise click.ClickException(f"HA rule '{rule}' does not exist")
            old = rules[rule]
            if old["type"] != rtype:
                raise click.ClickException(f"HA rule '{rule}' is a {old['type']} rule")
            new = dict(old)
            for key in (k.strip() for k in (delete or "").split(",") if k.strip()):
                if key not in DELETABLE[rtype]:
                    raise click.ClickException(f"--delete: cannot delete property '{key}'")
                if opts.get(key) is not None:
                    raise click.ClickException(
                        f"--delete: property '{key}' is both set and deleted"
                    )
                new.pop(key, None)
            _apply(rtype, new, opts)
            rules[rule] = new
            _check_and_write(store, rule, rules, ctx_helpers)

    @rules_group.command("remove")
    @click.argument("rule")
    @pass_ctx
    def remove(c: Any, rule: str) -> None:
        """Delete HA rule RULE."""
        store = c.store
        with errors(), store.locked():
            rules = read_rules(store)
            if rule not in rules:
                raise click.ClickException(f"no such ha rule '{rule}'")
            del rules[rule]
            _write(store, rules)

    def _listing(c: Any, rtype: str | None, resource: str | None) -> list[dict[str, Any]]:
        store = c.store
        with errors():
            rules = read_rules(store)
            ms = manager_status(store)
            problems = _errors_of(store, rules, sorted(ms["node_status"]))
            full = rl.RuleSet.from_config(rules)
            rl.migrate_groups_to_rules(full, store.read_groups(), store.read_resources())
        out = []
        for rid, rule in full.to_config().items():
            if rtype and rule["type"] != rtype:
                continue
            if resource and resource not in rule["resources"]:
                continue
            rec: dict[str, Any] = {"rule": rid, "type": rule["type"],
                                   "resources": ",".join(sorted(rule["resources"]))}  # fmt: skip
            if rule["type"] == "node-affinity":
                rec["nodes"] = ",".join(f"{n}:{p}" if p else n
                                        for n, p in sorted(rule["nodes"].items()))  # fmt: skip
                rec["strict"] = int(bool(rule.get("strict")))
            else:
                rec["affinity"] = rule["affinity"]
            if "disable" in rule:
                rec["disable"] = 1
            if rule.get("comment"):
                rec["comment"] = rule["comment"]
            rec["order"] = full.order[rid]
            if rid in problems:
                rec["errors"] = {o: ", ".join(m) for o, m in problems[rid].items()}
            out.append(rec)
        return out

    @rules_group.command("config")
    @click.option("--type", "rtype", type=click.Choice(TYPES), help="Only rules of this type.")
    @click.option("--resource", help="Only rules naming this resource.")
    @click.option("--output-format", type=click.Choice(["text", "json"]), default="text")
    @pass_ctx
    def config_cmd(c: Any, rtype: str | None, resource: str | None, output_format: str) -> None:
        """HA rules with whether each is in use or ignored for conflicts."""
        recs = _listing(c, rtype, resource)
        for rec in recs:
            rec["enabled"] = int("disable" not in rec)
            rec["state"] = "ignored (conflicts)" if rec.get("errors") else "in use"
        if output_format == "json":
            click.echo(json.dumps(recs, indent=4, sort_keys=True))
            return
        cols = ["enabled", "state", "rule", "type", "resources", "comment"]
        rows = [[str(r.get(k, "")) for k in cols] for r in recs]
        widths = [max([len(k), *(len(row[i]) for row in rows)]) for i, k in enumerate(cols)]
        for row in [cols, *rows]:
            click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        for rec in recs:
            for opt, msg in sorted((rec.get("errors") or {}).items()):
                click.echo(f"rule '{rec['rule']}' ignored: {opt}: {msg}", err=True)

    @rules_group.command("list")
    @click.option("--type", "rtype", type=click.Choice(TYPES), help="Only rules of this type.")
    @click.option("--resource", help="Only rules naming this resource.")
    @pass_ctx
    def list_cmd(c: Any, rtype: str | None, resource: str | None) -> None:
        """HA rules with every property (JSON)."""
        click.echo(json.dumps(_listing(c, rtype, resource), indent=4, sort_keys=True))


def purge_resource(store: Store, sid: str) -> None:
    """Drop ``sid`` from every rule; a rule left without resources goes (under the lock
    the caller holds)."""
    rules = read_rules(store)
    changed = False
    for rid in list(rules):
        res = rules[rid].get("resources") or []
        if sid in res:
            changed = True
            rest = [s for s in res if s != sid]
            if rest:
                rules[rid]["resources"] = rest
            else:
                del rules[rid]
    if changed:
        _write(store, rules)
