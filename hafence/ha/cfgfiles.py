"""The HA config files as the daemons read them: a damaged file never stops HA.

Proxmox's daemons read the cluster filesystem's last parsed version and its
section-config parser skips what it cannot read; hafence does the same, explicitly:

- a byte that is not UTF-8 (even in a comment) is read as U+FFFD, with a warning;
- a file that does not parse keeps its last good version (groups, rules, datacenter
  options; the defaults when there is none yet);
- ``resources.cfg`` is read section by section when it does not parse: every section that
  parses is taken from the file, a damaged one keeps its last good version (a typo in one
  service never drops another one), a section never seen good is left out;
- every problem is logged once per episode, naming file, line and field, and once more
  when the file reads cleanly again.

Writers (the master moving a service, an LRM after a relocate) rewrite ``resources.cfg``
from what this reads; an unreadable file is first kept beside it as
``resources.cfg.damaged-<time>``, so an admin's broken edit is never lost.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from typing import Any

from hafence.errors import HafenceError
from hafence.ha import config as hacfg
from hafence.store import Store

RESOURCES, GROUPS, RULES, DATACENTER = "resources.cfg", "groups.cfg", "rules.cfg", "datacenter.cfg"
_HEADER = re.compile(r"^(?P<type>[^\s:]+):\s*(?P<id>\S+)\s*$")


class ConfigFiles:
    """Reads one store's HA config for one daemon; remembers the last good versions."""

    def __init__(self, store: Store, log: Callable[[str, str], None]) -> None:
        self.store = store
        self.log = log
        self._last: dict[str, Any] = {}
        self._problems: dict[str, str] = {}  # file -> the problem logged for it
        self._parsed_text: str | None = None  # resources.cfg as it last parsed cleanly

    # -- reading ---------------------------------------------------------------------------
    def resources(self, copy: bool = True) -> dict[str, dict[str, Any]]:
        """The services; ``copy=False``: the parsed dicts themselves, for a reader that
        changes nothing (no copy of 30,000 services)."""
        return self.read_resources(copy)[0]

    def read_resources(self, copy: bool = True) -> tuple[dict[str, dict[str, Any]], str | None]:
        """``(services, damaged text or None)``: what to use, and the file when it did not
        parse cleanly (a writer keeps it aside)."""
        where = self.store.location(RESOURCES)
        text, bad_bytes = self._text(RESOURCES)
        if not bad_bytes and text == self._parsed_text and RESOURCES not in self._problems:
            # unchanged since it last parsed: no need to parse 10,000 sections again
            last = self._last[RESOURCES]
            return ({sid: dict(cd) for sid, cd in last.items()} if copy else last), None
        try:
            value = hacfg.parse_resources(text, where)
        except (HafenceError, ValueError) as exc:
            value, kept = self._salvage(text, where)
            self._problem(
                RESOURCES,
                f"service config unreadable: {exc}; using its readable sections"
                + (f" and the last good version of {', '.join(kept)}" if kept else ""),
            )
            return value, text
        self._good(RESOURCES, value, bad_bytes)
        self._parsed_text = text
        services = {sid: dict(cd) for sid, cd in value.items()} if copy else value
        return services, text if bad_bytes else None

    def resources_digest(self) -> str:
        """Changes with resources.cfg's text (as last read)."""
        return hashlib.sha1((self._parsed_text or "").encode()).hexdigest()

    def groups(self) -> dict[str, dict[str, Any]]:
        return self._read(GROUPS, hacfg.parse_groups, {})

    def rules(self) -> dict[str, dict[str, Any]]:
        return self._read(RULES, hacfg.parse_rules, {})

    def datacenter(self) -> dict[str, Any]:
        """The datacenter options (``ha`` always filled, ``crs`` when given)."""
        default = {"ha": dict(hacfg.DEFAULT_HA_OPTIONS)}
        return dict(self._read(DATACENTER, hacfg.parse_datacenter, default))

    def ha_options(self) -> dict[str, Any]:
        return dict(self.datacenter()["ha"])

    # -- writing -----------------------------------------------------------------------------
    def rewrite_resources(self, change: Callable[[dict[str, dict[str, Any]]], bool]) -> str | None:
        """Read-modify-write of resources.cfg under the store's lock; ``change`` returns
        whether it changed anything. An unreadable file is kept aside first: its name."""
        aside = None
        with self.store.locked():
            resources, damaged = self.read_resources()
            if not change(resources):
                return None
            if damaged is not None:
                aside = f"{RESOURCES}.damaged-{int(time.time())}"
                self.store.write_text(aside, damaged)
                self.log(
                    "warning",
                    f"{self.store.location(RESOURCES)} was not readable: rewrote it from its "
                    f"readable part, the file as it was is kept as {self.store.location(aside)}",
                )
            self.store.write_resources(resources)
        return aside

    # -- helpers -----------------------------------------------------------------------------
    def _text(self, name: str) -> tuple[str, bool]:
        # The daemons read past a stray byte (a comment must not stop HA); the CLIs and
        # `store.read_text` refuse it, naming the line.
        raw = self.store.read_bytes(name) or b""
        try:
            return raw.decode(), False
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            self._problem(
                f"{name}#utf8",
                f"{self.store.location(name)}:{line}: byte {exc.start} is not UTF-8, read as "
                "U+FFFD",
                "warning",
            )
            return raw.decode("utf-8", "replace"), True

    def _read(self, name: str, parse: Callable[[str, str], Any], default: Any) -> Any:
        text, bad_bytes = self._text(name)
        try:
            value = parse(text, self.store.location(name))
        except (HafenceError, ValueError) as exc:
            keep = "keeping the last good version" if name in self._last else "using defaults"
            self._problem(name, f"{name} unreadable: {exc}; {keep}")
            return self._last.get(name, default)
        self._good(name, value, bad_bytes)
        return value

    def _salvage(self, text: str, where: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """Section by section: readable ones from the file, damaged ones last good."""
        last = self._last.get(RESOURCES, {})
        out: dict[str, dict[str, Any]] = {}
        kept: list[str] = []
        for first, lines in _sections(text):
            m = _HEADER.match(lines[0])
            sid = f"{m['type']}:{m['id']}" if m else None
            if sid in out:
                continue
            try:
                # leading newlines keep the line numbers of errors right
                out.update(hacfg.parse_resources("\n" * (first - 1) + "\n".join(lines), where))
            except (HafenceError, ValueError):
                if sid in last:
                    out[sid] = dict(last[sid])
                    kept.append(sid)
        return out, kept

    def _good(self, name: str, value: Any, bad_bytes: bool) -> None:
        self._last[name] = value
        if self._problems.pop(name, None) is not None:
            self.log("info", f"{self.store.location(name)} reads cleanly again")
        if not bad_bytes:
            self._problems.pop(f"{name}#utf8", None)

    def _problem(self, key: str, msg: str, level: str = "err") -> None:
        msg = " ".join(msg.split("\n"))  # one log line
        if self._problems.get(key) != msg:
            self._problems[key] = msg
            self.log(level, msg)


def _sections(text: str) -> list[tuple[int, list[str]]]:
    """``(first line number, lines)`` of every section (a line at column 0 starts one)."""
    out: list[tuple[int, list[str]]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip() and line[0] not in " \t#":
            out.append((lineno, [line]))
        elif out:
            out[-1][1].append(line)
    return out
