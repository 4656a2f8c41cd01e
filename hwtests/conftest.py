"""Hardware-in-the-loop tests: real devices when configured, else the simulated peers.

The hardware config is ``hwtests/hardware.toml`` or the file named by
``$HAFENCE_HW_CONFIG`` (format: ``hwtests/hardware.example.toml``). Fence devices are
tables ``[fence.NAME]`` holding ``driver``, ``allow_power_off`` and the driver's options;
passwords only as ``password_file`` / ``password_env`` (an inline secret is refused).
``[watchdog.NAME]`` tables are checked here too; other top-level tables are free for other
hwtests: :func:`hw_section` returns them. Every error names the file, the line and the
field (``fence.NAME.KEY``); the whole file is checked at load, before any test runs.

Fence hwtests ask for the ``hw_device`` fixture and name their driver(s) with a marker::

    pytestmark = pytest.mark.hw_driver("ipmi")

    async def test_status(hw_device):
        async with hw_device.build() as drv: ...

Each test then runs once per configured device of that driver. With no config file
it runs against the simulated peer registered for the driver (:func:`register_simulator`;
``ipmi`` -> ipmi_sim is built in), and is skipped with a reason when there is none.
Destructive steps call ``hw_device.require_power_off()``, which skips unless the
device's config says ``allow_power_off = true`` (simulated peers always allow it).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tomllib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hafence.cfgtext import config_lines, read_config
from hafence.errors import ConfigError, HafenceError, ParamError
from hafence.fence import driver_class
from hafence.fence.driver import FenceDriver
from hafence.plugins import PluginRegistry, get_registry

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "hardware.toml"
RESERVED = ("driver", "allow_power_off", "description")


@dataclass
class HwDevice:
    """One fence device under test: configured hardware or a simulated peer."""

    name: str
    driver: str
    options: dict[str, Any]
    allow_power_off: bool = False
    simulated: bool = False
    peer: Any = None  #: the simulator object (e.g. IpmiSim) when simulated
    extra: dict[str, Any] = field(default_factory=dict)

    def build(self, registry: PluginRegistry | None = None, **override: Any) -> FenceDriver:
        """A driver for this device; ``override`` replaces options (e.g. a bad password)."""
        cls = driver_class(self.driver, registry)
        opts = {**self.options, **override}
        for key in override:  # an override of X also replaces X_file / X_env
            for src in ("_file", "_env"):
                if key + src in opts and key + src not in override:
                    del opts[key + src]
        return cls(opts, label=self.name)

    def require_power_off(self) -> None:
        if not self.allow_power_off:
            pytest.skip(f"{self.name}: allow_power_off is not set in the hardware config")

    def __repr__(self) -> str:  # options may name secret files/variables, never values
        kind = "simulated" if self.simulated else "hardware"
        return f"<HwDevice {self.name} {self.driver} {kind}>"


@dataclass
class HwConfig:
    path: Path
    data: dict[str, Any]
    devices: list[HwDevice]


def config_path() -> Path:
    env = os.environ.get("HAFENCE_HW_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


WATCHDOG_KEYS = ("device", "allow_reset", "description")
_TOML_ERROR_AT = re.compile(r"\(at line (\d+), column (\d+)\)")
_TOML_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_TOML_PART = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_-]+)\s*(\.|$)')


def _toml_key(part: str) -> str:
    if part.startswith('"'):
        return json.loads(part)  # TOML basic strings escape like JSON for names
    return part.strip("'")


def _header_path(header: str) -> tuple[str, ...] | None:
    parts, pos = [], 0
    while pos < len(header):
        m = _TOML_PART.match(header, pos)
        if m is None:
            return None
        try:
            parts.append(_toml_key(m.group(1)))
        except ValueError:
            return None
        pos = m.end()
    return tuple(parts)


def _toml_line(text: str, table: tuple[str, ...], key: str | None = None) -> int:
    """Where ``[table]`` (and its ``key = ...``) is written: the key's line, else the
    header's, else 1 (a table written inline or with dotted keys)."""
    header_line, current = 0, None
    for n, line in enumerate(config_lines(text), 1):
        m = _TOML_HEADER.match(line)
        if m is not None:
            current = _header_path(m.group(1))
            if current == table and not header_line:
                header_line = n
            continue
        if key is not None and current == table:
            head = line.split("=", 1)[0].strip() if "=" in line else ""
            if head and _header_path(head) == (key,):
                return n
    return header_line or 1


def load_hw_config(
    path: Path | None = None, registry: PluginRegistry | None = None
) -> HwConfig | None:
    """The hardware config, or None when there is none. Errors name file, line and field."""
    path = path or config_path()
    if not path.exists():
        if os.environ.get("HAFENCE_HW_CONFIG"):
            raise ConfigError("file not found (named by $HAFENCE_HW_CONFIG)", file=str(path))
        return None
    file = str(path)
    text = read_config(path)  # ConfigError: unreadable, not UTF-8, a control character
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message carries line and column
        m = _TOML_ERROR_AT.search(str(exc))
        line = int(m.group(1)) if m else None
        message = _TOML_ERROR_AT.sub("", str(exc)).strip() + (
            f" (column {m.group(2)})" if m else ""
        )
        raise ConfigError(f"invalid TOML: {message}", file=file, line=line or 1) from None

    def fail(message: str, table: tuple[str, ...], key: str | None = None) -> ConfigError:
        where = ".".join((*table, key) if key else table)
        return ConfigError(message, file=file, line=_toml_line(text, table, key), field=where)

    for top, value in data.items():
        if not isinstance(value, dict):
            raise fail("must be a table, e.g. [fence.NAME] or [watchdog.NAME]", (top,))
    _check_watchdogs(data.get("watchdog", {}), fail)
    fence = data.get("fence", {})
    registry = registry or get_registry()
    devices = []
    for name, table in fence.items():
        where = ("fence", name)
        if not isinstance(table, dict):
            raise fail("must be a table", where)
        driver = table.get("driver")
        if not isinstance(driver, str):
            raise fail("missing driver name", where, "driver")
        allow = table.get("allow_power_off", False)
        if not isinstance(allow, bool):
            raise fail("must be true or false", where, "allow_power_off")
        if not isinstance(table.get("description", ""), str):
            raise fail("must be a string", where, "description")
        options = {k: v for k, v in table.items() if k not in RESERVED}
        try:
            cls = driver_class(driver, registry)
        except HafenceError as exc:
            raise fail(str(exc), where, "driver") from None
        schema = {n: p for p in cls.all_params() for n in (p.name, *p.aliases)}
        for key in options:
            if key in schema and schema[key].secret:
                raise fail(
                    f"do not put secrets in this file: use {key}_file or {key}_env", where, key
                )
        try:
            cls(options, label=name)  # validates every option now, not mid-test
        except ParamError as exc:
            raise fail(exc.message, where, exc.field) from None
        except Exception as exc:  # a driver bug; its text could hold a secret: only the type
            raise fail(
                f"driver '{driver}' failed on these options ({type(exc).__name__})", where, "driver"
            ) from None
        devices.append(HwDevice(name, driver, options, allow_power_off=allow))
    return HwConfig(path, data, devices)


def _check_watchdogs(section: dict[str, Any], fail: Callable[..., ConfigError]) -> None:
    """``[watchdog.NAME]`` tables (read by test_watchdog_hw.py): checked at load time."""
    for name, table in section.items():
        where = ("watchdog", name)
        if not isinstance(table, dict):
            raise fail("must be a table", where)
        for key in table:
            if key not in WATCHDOG_KEYS:
                raise fail(f"unknown key (known: {', '.join(WATCHDOG_KEYS)})", where, key)
        device = table.get("device")
        if not isinstance(device, str) or not re.fullmatch(r"/dev/watchdog[0-9]{0,3}", device):
            raise fail("must be a /dev/watchdogN path", where, "device")
        if not isinstance(table.get("allow_reset", False), bool):
            raise fail("must be true or false", where, "allow_reset")
        if not isinstance(table.get("description", ""), str):
            raise fail("must be a string", where, "description")


@functools.cache
def hw_config() -> HwConfig | None:
    """The hardware config of this run (loaded once), or None."""
    return load_hw_config()


def hw_section(name: str) -> dict[str, Any]:
    """A top-level table of the hardware config (e.g. "watchdog"); {} without a config."""
    cfg = hw_config()
    return dict(cfg.data.get(name, {})) if cfg else {}


# -- simulated peers ------------------------------------------------------------------------
Simulator = Callable[[Path], AbstractContextManager[HwDevice]]
SIMULATORS: dict[str, Simulator] = {}


def register_simulator(driver: str) -> Callable[[Simulator], Simulator]:
    """Decorator: a context manager factory ``f(workdir) -> HwDevice`` for ``driver``."""

    def deco(factory: Simulator) -> Simulator:
        SIMULATORS[driver] = factory
        return factory

    return deco


@register_simulator("ipmi")
@contextlib.contextmanager
def _ipmi_sim(workdir: Path) -> Iterator[HwDevice]:
    from hafence.simdevices.ipmi_sim import IpmiSim, available

    if not available():
        pytest.skip("no hardware configured and OpenIPMI ipmi_sim is not installed")
    with IpmiSim(workdir=workdir, password="hw-Sim-pw1") as sim:
        yield HwDevice("ipmi_sim", "ipmi", sim.driver_options(), True, True, sim)


# -- pytest wiring ----------------------------------------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "hw_driver(*names): the fence drivers a hw test runs against (hw_device)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "hw_device" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("hw_driver")
    drivers = tuple(marker.args) if marker else ()
    cfg = hw_config()
    if cfg is not None:
        devs = [d for d in cfg.devices if not drivers or d.driver in drivers]
        params = [pytest.param(d, id=d.name, marks=pytest.mark.hw) for d in devs]
        if not params:
            reason = f"no {'/'.join(drivers) or 'fence'} device in {cfg.path}"
            params = [pytest.param(None, id="none", marks=pytest.mark.skip(reason=reason))]
    else:
        params = [pytest.param(f"sim:{d}", id=f"sim-{d}") for d in drivers if d in SIMULATORS]
        if not params:
            reason = (
                f"no hardware configured ({config_path()} or $HAFENCE_HW_CONFIG) and no "
                f"simulated peer for {'/'.join(drivers) or 'this test'}"
            )
            params = [pytest.param(None, id="none", marks=pytest.mark.skip(reason=reason))]
    metafunc.parametrize("hw_device", params, indirect=True)


@pytest.fixture
def hw_device(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HwDevice]:
    """The device under test (see module doc); a simulated peer is stopped afterwards."""
    param = request.param
    if isinstance(param, HwDevice):
        yield param
        return
    driver = str(param).removeprefix("sim:")
    with SIMULATORS[driver](tmp_path / "peer") as dev:
        yield dev


@pytest.fixture
def hw_registry() -> PluginRegistry:
    return get_registry()
