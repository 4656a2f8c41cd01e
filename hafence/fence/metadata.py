"""Driver metadata export: a JSON-able dict, and ClusterLabs fence-agents XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from hafence.fence.driver import FenceDriver, Param
from hafence.secrets import Secret


def _default(p: Param) -> Any:
    # A secret's default is never exported, even if a driver (wrongly) sets one.
    if p.secret or isinstance(p.default, Secret):
        return None
    return p.default


def param_metadata(p: Param) -> dict[str, Any]:
    return {
        "name": p.name,
        "type": p.type_name,
        "required": p.required,
        "default": _default(p),
        "secret": p.secret,
        "help": p.help,
        "choices": list(p.choices),
        "aliases": list(p.aliases),
    }


def driver_metadata(cls: type[FenceDriver]) -> dict[str, Any]:
    actions = set(cls.actions) | {"reboot"}  # the fencer composes reboot when missing
    return {
        "name": cls.name,
        "description": cls.description,
        "actions": sorted(actions),
        "native_actions": sorted(cls.actions),
        "parameters": [param_metadata(p) for p in cls.all_params()],
    }


def driver_metadata_xml(cls: type[FenceDriver]) -> str:
    """The driver described as a fence-agents ``-o metadata`` document."""
    meta = driver_metadata(cls)
    root = ET.Element("resource-agent", name=meta["name"], shortdesc=meta["description"])
    ET.SubElement(root, "longdesc").text = meta["description"]
    ET.SubElement(root, "vendor-url").text = ""
    params = ET.SubElement(root, "parameters")
    for p in meta["parameters"]:
        attrs = {"name": p["name"], "unique": "0", "required": "1" if p["required"] else "0"}
        if p["aliases"]:
            attrs["obsoletes"] = p["aliases"][0]
        el = ET.SubElement(params, "parameter", attrs)
        getopt = f"--{p['name']}" if p["type"] == "boolean" else f"--{p['name']}=[{p['name']}]"
        ET.SubElement(el, "getopt", mixed=getopt)
        if p["choices"]:
            content = ET.SubElement(el, "content", type="select")
            for choice in p["choices"]:
                ET.SubElement(content, "option", value=choice)
        else:
            content = ET.SubElement(el, "content", type=p["type"])
        if p["default"] is not None:
            default = p["default"]
            content.set("default", str(int(default) if isinstance(default, bool) else default))
        ET.SubElement(el, "shortdesc", lang="en").text = p["help"]
    actions = ET.SubElement(root, "actions")
    for action in [*meta["actions"], "metadata"]:
        ET.SubElement(actions, "action", name=action)
    ET.indent(root, space="\t")
    return '<?xml version="1.0" ?>\n' + ET.tostring(root, encoding="unicode") + "\n"
