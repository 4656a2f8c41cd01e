"""``hafence plugins list``, ``drivers list``, ``driver metadata NAME``.

What is loaded, from which distribution, which drivers each plugin provides, and
every load error named by plugin (a broken plugin never hides the others).
"""

from __future__ import annotations

from typing import Any

import click

from hafence.cli import output as out
from hafence.fence.chain import driver_class
from hafence.fence.metadata import driver_metadata, driver_metadata_xml
from hafence.plugins import PluginRegistry, get_registry

# hook name -> the kind of driver it provides, as shown in tables
HOOKS = {
    "hafence_fence_drivers": "fence",
    "hafence_watchdog_drivers": "watchdog",
    "hafence_resource_types": "resource",
}


def _collect(registry: PluginRegistry) -> dict[str, dict[str, type]]:
    """Call every hook once (this also records which plugin provides what)."""
    return {
        "fence": registry.fence_drivers(),
        "watchdog": registry.watchdog_drivers(),
        "resource": registry.resource_types(),
    }


def _description(cls: type, width: int | None = None) -> str:
    text = getattr(cls, "description", "") or (cls.__doc__ or "")
    first = text.strip().splitlines()[0] if text.strip() else ""
    if width and len(first) > width:
        first = first[: width - 3].rstrip() + "..."
    return first


@click.group("plugins")
def plugins_group() -> None:
    """Loaded plugins."""


@plugins_group.command("list")
@out.command_body
def plugins_list() -> None:
    """Loaded plugins, where they come from, their drivers, and load errors."""
    registry = get_registry()
    drivers = _collect(registry)
    provided: dict[str, list[str]] = {}
    for hook, kind in HOOKS.items():
        for name in drivers[kind]:
            owner = registry.owner(hook, name)
            if owner is not None:
                provided.setdefault(owner, []).append(f"{kind}:{name}")
    errors: dict[str, list[str]] = {}
    for err in registry.errors:
        errors.setdefault(err.plugin, []).append(err.message)
    rows: list[dict[str, Any]] = []
    for name, info in sorted(registry.plugins.items()):
        rows.append(
            {
                "name": name,
                "source": info.source,
                "module": info.module,
                "drivers": provided.get(name, []),
                "ok": not errors.get(name) and info.error is None,
                "errors": errors.get(name, []),
            }
        )
    if out.state().json:
        out.emit_json({"plugins": rows, "errors": [str(e) for e in registry.errors]})
        return
    out.echo(
        out.table(
            ["PLUGIN", "FROM", "MODULE", "DRIVERS", "STATUS"],
            [
                [
                    r["name"],
                    r["source"],
                    r["module"],
                    ", ".join(r["drivers"]) or "-",
                    "ok" if r["ok"] else "ERROR",
                ]
                for r in rows
            ],
        )
    )
    for err in registry.errors:
        out.echo(f"error: {err}")


@click.group("drivers")
def drivers_group() -> None:
    """Drivers provided by the loaded plugins."""


@drivers_group.command("list")
@out.command_body
def drivers_list() -> None:
    """Every driver (fence, watchdog, resource type) and the plugin providing it."""
    registry = get_registry()
    drivers = _collect(registry)
    rows = []
    for hook, kind in HOOKS.items():
        for name, cls in sorted(drivers[kind].items()):
            actions = sorted(
                set(getattr(cls, "actions", ())) | ({"reboot"} if kind == "fence" else set())
            )
            rows.append(
                {
                    "name": name,
                    "kind": kind,
                    "plugin": registry.owner(hook, name),
                    "actions": sorted(actions),
                    "description": _description(cls),
                    "short": _description(cls, 60),
                }
            )
    if out.state().json:
        out.emit_json([{k: v for k, v in r.items() if k != "short"} for r in rows])
        return
    out.echo(
        out.table(
            ["DRIVER", "KIND", "PLUGIN", "ACTIONS", "DESCRIPTION"],
            [[r["name"], r["kind"], r["plugin"], ",".join(r["actions"]), r["short"]] for r in rows],
        )
    )
    if "fence_agent" in drivers["fence"]:
        out.echo(
            "any installed ClusterLabs fence_* agent is usable too, e.g. --driver fence_ipmilan"
        )
    if registry.errors:
        out.echo(f"{len(registry.errors)} plugin error(s): see 'hafence plugins list'")


@click.group("driver")
def driver_group() -> None:
    """One driver."""


@driver_group.command("metadata")
@click.argument("name")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "xml"]),
    default=None,
    help="text (default), json, or fence-agents XML (as 'fence_x -o metadata').",
)
@out.command_body
def driver_metadata_cmd(name: str, fmt: str | None) -> None:
    """Parameters and actions of fence driver NAME (or a ClusterLabs fence_* agent)."""
    cls = driver_class(name)  # UnknownDriverError: exit 2 naming what is available
    fmt = fmt or ("json" if out.state().json else "text")
    if fmt == "xml":
        out.echo(driver_metadata_xml(cls).rstrip("\n"))
        return
    meta = driver_metadata(cls)
    if fmt == "json":
        out.emit_json(meta)
        return
    out.echo(f"{meta['name']}: {meta['description']}")
    out.echo(f"actions: {', '.join(meta['actions'])}")
    out.echo(
        out.table(
            ["PARAMETER", "TYPE", "REQUIRED", "DEFAULT", "SECRET", "HELP"],
            [
                [
                    p["name"] + (f" ({', '.join(p['aliases'])})" if p["aliases"] else ""),
                    p["type"] + (f" [{'|'.join(p['choices'])}]" if p["choices"] else ""),
                    "yes" if p["required"] else "",
                    "" if p["default"] is None else p["default"],
                    "yes" if p["secret"] else "",
                    p["help"],
                ]
                for p in meta["parameters"]
            ],
        )
    )
    if any(p["secret"] for p in meta["parameters"]):
        out.echo("secret parameters also accept NAME_file=PATH and NAME_env=VARIABLE")
