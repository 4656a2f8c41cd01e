"""The fence driver conformance kit: one battery of contract checks for every driver.

A vendor subclasses :class:`DriverConformance` in a test module, names the driver and
says how to reach a device (real or simulated); pytest then runs every check below
against it::

    import pytest
    from hafence.testing import DriverConformance

    class TestMyPdu(DriverConformance):
        driver_name = "my_pdu"          # looked up through the installed entry points
        # or: driver = MyPduDriver      # the class itself

        @pytest.fixture
        def device_options(self, my_peer):        # REQUIRED: a working device/target
            return my_peer.driver_options(outlet=3)

        @pytest.fixture
        def device_power(self, my_peer):          # optional: read the hardware directly
            return lambda: my_peer.power(3)       # "on" / "off"

        @pytest.fixture
        def unreachable_options(self, device_options, silent_tcp_port):
            return {**device_options, "ipport": silent_tcp_port}   # nobody answers

Fixtures a subclass may define (all per test):

``device_options`` (required)
    Options that reach a working device whose target may be powered off and on.
``device_power``
    A callable returning the target's real power state, ``"on"``/``"off"``, read
    independently of the driver (from the peer, a lab PDU...). Without it the kit
    trusts the driver's own status.
``unreachable_options``
    Options for an address where nothing answers (``silent_tcp_port``,
    ``closed_udp_port``... from the hafence pytest plugin). Without it the time-out
    check fails and says so; skip it explicitly through ``skip_checks``.
``wrong_credentials_options``
    Options the device refuses. By default every secret of ``device_options`` is
    replaced by a wrong value; a driver that declares no secret skips the check.

Class attributes: ``unreachable_timeout`` (the ``timeout`` option set for the
time-out check, default 2 s), ``timeout_margin`` (how far past it the driver may
still answer, default 5 s: a contract check, not a benchmark), ``max_loop_stall``
(the longest the event loop may be blocked while the driver works, default 1 s) and
``skip_checks`` (``{"check name": "reason"}``, see :data:`CHECKS`).

Power actions go through the real :class:`hafence.fence.Fencer`, so "off" means a
confirmed off (status polled), exactly as when a node is fenced. Peers must run in
their own thread or process: each check runs its driver calls in a fresh event loop
(``asyncio.run``), so the kit needs no pytest-asyncio configuration.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest

from hafence.errors import (
    AuthError,
    FenceTimeoutError,
    NotSupportedError,
    ParamError,
    UnreachableError,
)
from hafence.fence import FenceConfigErrors, FenceHistory, Fencer, check_drivers
from hafence.fence.config import parse_fence_config
from hafence.fence.driver import ACTIONS, FenceDriver, Param, Port, PowerState
from hafence.fence.fencer import ActionResult
from hafence.fence.metadata import driver_metadata, driver_metadata_xml
from hafence.fence.params import standard_misuse
from hafence.plugins import DriverPlugin, PluginRegistry
from hafence.secrets import Secret

__all__ = ["CHECKS", "DriverConformance", "PowerProbe", "wrong_credentials"]

PowerProbe = Callable[[], str]
T = TypeVar("T")

#: Names usable in ``skip_checks``.
CHECKS: tuple[str, ...] = (
    "metadata",
    "schema",
    "standard_params",
    "required",
    "bad_values",
    "secrets",
    "status",
    "power",
    "reboot",
    "monitor",
    "list",
    "unreachable",
    "credentials",
    "fence_cfg",
    "entry_point",
)

KIT_LABEL = "kit-dev"
KIT_NODE = "kitnode"
WRONG_PREFIX = "Wr0ng-"
_RESOLVED: dict[str, type[FenceDriver]] = {}
# Secrets shorter than this are not searched for in output (they match by chance).
MIN_SECRET_LEN = 4


def wrong_credentials(cls: type[FenceDriver], options: Mapping[str, Any]) -> dict[str, Any] | None:
    """``options`` with every secret replaced by a wrong one; None if there is none."""
    schema = _names(cls)
    out, changed = dict(options), False
    for key, value in options.items():
        canon = schema.get(key)
        if canon is not None and _param(cls, canon).secret and value is not None:
            out[key] = _wrong(_clear(value))
            changed = True
    return out if changed else None


def _wrong(clear: str) -> str:
    """A wrong secret of the same length (devices cap lengths: IPMI at 20 bytes)."""
    size = max(len(clear), 1)
    wrong = (WRONG_PREFIX * (size // len(WRONG_PREFIX) + 1))[:size]
    return wrong if wrong != clear else wrong.swapcase()


class DriverConformance:
    """Base class of a driver's conformance tests; see the module docstring."""

    driver: ClassVar[type[FenceDriver] | None] = None
    driver_name: ClassVar[str | None] = None
    unreachable_timeout: ClassVar[float] = 2.0
    timeout_margin: ClassVar[float] = 5.0
    max_loop_stall: ClassVar[float] = 1.0
    skip_checks: ClassVar[Mapping[str, str]] = {}

    # -- fixtures a subclass overrides -----------------------------------------------
    @pytest.fixture
    def device_options(self) -> dict[str, Any]:
        pytest.fail(
            f"{type(self).__name__}: define a 'device_options' fixture returning options "
            "that reach a working device",
            pytrace=False,
        )

    @pytest.fixture
    def device_power(self) -> PowerProbe | None:
        return None

    @pytest.fixture
    def unreachable_options(self) -> dict[str, Any] | None:
        return None

    @pytest.fixture
    def wrong_credentials_options(self, device_options: dict[str, Any]) -> dict[str, Any] | None:
        return wrong_credentials(self.driver_class(), device_options)

    # -- helpers ---------------------------------------------------------------------
    @classmethod
    def driver_class(cls) -> type[FenceDriver]:
        """The driver under test: ``driver``, else ``driver_name`` from the plugins."""
        if cls.driver is not None:
            return cls.driver
        if not cls.driver_name:
            pytest.fail(f"{cls.__name__}: set 'driver' or 'driver_name'", pytrace=False)
        if cls.driver_name not in _RESOLVED:  # one entry-point scan per driver and run
            _RESOLVED[cls.driver_name] = _installed_driver(cls.driver_name)
        return _RESOLVED[cls.driver_name]

    def _skip(self, check: str) -> None:
        if check in self.skip_checks:
            pytest.skip(f"{type(self).__name__}: {check}: {self.skip_checks[check]}")

    def _build(self, options: Mapping[str, Any]) -> FenceDriver:
        return self.driver_class()(dict(options), label=KIT_LABEL)

    def _fencer(self, tmp_path: Path, config: Any = None) -> Fencer:
        registry = PluginRegistry(load_entry_points=False)
        registry.register(DriverPlugin(self.driver_class()), "conformance-kit")
        history = FenceHistory(tmp_path / "kit-history.jsonl")
        return Fencer(config, registry, history, retries=0, backoff=0.0, actor="conformance")

    def _run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine in a fresh loop; fail if it blocks the loop too long."""
        return asyncio.run(self._watched(make))

    async def _watched(self, make: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        worst = [0.0]

        async def heartbeat() -> None:
            last = loop.time()
            while True:
                await asyncio.sleep(0.01)
                now = loop.time()
                worst[0] = max(worst[0], now - last - 0.01)
                last = now

        beat = asyncio.create_task(heartbeat())
        try:
            result = await make()
        finally:
            beat.cancel()
        assert worst[0] < self.max_loop_stall, (
            f"{self.driver_class().name}: the event loop was blocked for "
            f"{worst[0]:.2f}s (limit {self.max_loop_stall:g}s): the driver makes a "
            "blocking call in the event loop; use asyncio I/O or a thread"
        )
        return result

    def _power_ok(self, probe: PowerProbe | None, expected: str, when: str) -> None:
        if probe is not None:
            seen = probe()
            assert seen == expected, f"{when}: the device says {seen!r}, expected {expected!r}"

    # -- metadata ----------------------------------------------------------------------
    def test_metadata_json(self) -> None:
        """driver_metadata(): JSON-able, named, described, actions sane, no secret default."""
        self._skip("metadata")
        cls = self.driver_class()
        meta = json.loads(json.dumps(driver_metadata(cls)))
        assert meta["name"] == cls.name and cls.name.strip() == cls.name and cls.name
        assert meta["description"].strip(), f"{cls.name}: description is empty"
        for needed in ("status", "off", "on"):
            assert needed in cls.actions, f"{cls.name}: actions lack '{needed}'"
        assert "monitor" in meta["actions"] and "reboot" in meta["actions"]
        unknown = set(cls.actions) - set(ACTIONS)
        for extra in unknown:  # extra actions must be real coroutine methods
            assert asyncio.iscoroutinefunction(getattr(cls, extra, None)), (
                f"{cls.name}: action '{extra}' has no async method"
            )
        names = [p["name"] for p in meta["parameters"]]
        assert len(names) == len(set(names)), f"{cls.name}: duplicate parameters {names}"
        for p in meta["parameters"]:
            assert p["help"].strip(), f"{cls.name}: parameter '{p['name']}' has no help"
            if p["secret"]:
                assert p["default"] is None, f"{cls.name}: secret '{p['name']}' has a default"

    def test_metadata_xml(self) -> None:
        """fence-agents XML metadata: well-formed, every parameter described, actions."""
        self._skip("metadata")
        cls = self.driver_class()
        root = ET.fromstring(driver_metadata_xml(cls))
        assert root.tag == "resource-agent" and root.get("name") == cls.name
        params = {el.get("name"): el for el in root.iter("parameter")}
        assert set(params) == {p.name for p in cls.all_params()}
        for p in cls.all_params():
            el = params[p.name]
            assert el.get("required") == ("1" if p.required else "0")
            desc = el.find("shortdesc")
            assert desc is not None and (desc.text or "").strip(), f"'{p.name}': no shortdesc"
            content = el.find("content")
            assert content is not None, f"'{p.name}': no content element"
            if p.secret:
                assert content.get("default") is None, f"secret '{p.name}' has a default"
        actions = {el.get("name") for el in root.iter("action")}
        assert {"on", "off", "status", "monitor", "metadata"} <= actions

    def test_param_schema(self) -> None:
        """Names and aliases unique; required params without default; choices valid."""
        self._skip("schema")
        cls = self.driver_class()
        own = [p.name for p in cls.params]
        assert len(own) == len(set(own)), f"{cls.name}: a parameter is declared twice"
        seen: dict[str, str] = {}
        for p in cls.all_params():
            assert isinstance(p, Param)
            assert p.name.isidentifier() or p.name.replace("-", "_").isidentifier(), p.name
            for n in (p.name, *p.aliases):
                assert n not in seen, f"{cls.name}: '{n}' names both '{seen[n]}' and '{p.name}'"
                seen[n] = p.name
            if p.required:
                assert p.default is None, f"{cls.name}: required '{p.name}' has a default"
            if p.choices and p.default is not None:
                assert str(p.default) in p.choices, f"'{p.name}': default not in choices"
            if p.default is not None:
                p.coerce(p.default)  # a default must pass its own type check
            if p.secret:
                assert p.default is None, f"{cls.name}: secret '{p.name}' has a default"

    def test_standard_params(self) -> None:
        """The standard names (ip, ipport, username, password, plug, the timing ones and
        their aliases) mean in this driver what the catalogue says: no 'port' for a
        network port, no 'login' for anything but the user name."""
        self._skip("standard_params")
        cls = self.driver_class()
        misuse = standard_misuse(cls.all_params())
        assert not misuse, f"{cls.name}: " + "; ".join(misuse)

    # -- parameters --------------------------------------------------------------------
    def test_required_params_enforced(self, device_options: dict[str, Any], tmp_path: Path) -> None:
        """Each required parameter missing: ParamError naming it; in fence.cfg a
        ConfigError naming file, line and field."""
        self._skip("required")
        cls = self.driver_class()
        required = [p for p in cls.all_params() if p.required]
        self._build(device_options)  # the full set is valid
        for p in required:
            names = {p.name, *p.aliases}
            names |= {f"{n}_{src}" for n in names for src in ("file", "env")}
            opts = {k: v for k, v in device_options.items() if k not in names}
            with pytest.raises(ParamError) as err:
                self._build(opts)
            assert err.value.field == p.name, f"error names '{err.value.field}', not '{p.name}'"
            assert p.name in str(err.value)
            text = _cfg_text(cls, opts, tmp_path)
            cfg = parse_fence_config(text, str(tmp_path / "fence.cfg"))
            with pytest.raises(FenceConfigErrors) as cerr:
                check_drivers(cfg, self._fencer(tmp_path).registry)
            fields = [(e.field, e.line, e.file) for e in cerr.value.errors]
            assert (p.name, 1, str(tmp_path / "fence.cfg")) in fields, fields
        with pytest.raises(ParamError) as err:
            self._build({**device_options, "no_such_option_x": "1"})
        assert err.value.field == "no_such_option_x"

    def test_bad_values_rejected(self, device_options: dict[str, Any]) -> None:
        """A value of the wrong type or outside the choices: ParamError naming the field."""
        self._skip("bad_values")
        cls = self.driver_class()
        for p in cls.all_params():
            if p.secret or (p.type is str and not p.choices):
                continue
            opts = {k: v for k, v in device_options.items() if _names(cls).get(k) != p.name}
            opts[p.name] = "not-a-valid-value!"
            with pytest.raises(ParamError) as err:
                self._build(opts)
            assert err.value.field == p.name, f"error names '{err.value.field}', not '{p.name}'"

    # -- secrets -----------------------------------------------------------------------
    def test_secrets_masked(
        self,
        device_options: dict[str, Any],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Secret params are Secrets, never in repr/str/public options/metadata; they
        can come from X_file and X_env, and the device accepts them from there."""
        self._skip("secrets")
        cls = self.driver_class()
        caplog.set_level(logging.DEBUG)
        driver = self._build(device_options)
        given = _secret_keys(cls, device_options)
        for key in given:
            canon = _names(cls)[key]
            assert isinstance(driver.options[canon], Secret), f"'{canon}' is not a Secret"
        secrets = _secrets(driver)
        shown = [repr(driver), str(driver), json.dumps(driver.public_options(), default=str)]
        shown += [json.dumps(driver_metadata(cls)), driver_metadata_xml(cls)]
        _assert_clean(shown, secrets, "driver repr/str/metadata")
        if not given:
            return
        via_file = dict(device_options)
        via_env = dict(device_options)
        for i, key in enumerate(given):
            canon = _names(cls)[key]
            clear = _clear(device_options[key])
            path = tmp_path / f"secret{i}"
            path.write_text(clear + "\n")
            path.chmod(0o600)
            monkeypatch.setenv(f"HAFENCE_KIT_SECRET{i}", clear)
            del via_file[key], via_env[key]
            via_file[f"{canon}_file"] = str(path)
            via_env[f"{canon}_env"] = f"HAFENCE_KIT_SECRET{i}"
        for opts in (via_file, via_env):
            other = self._build(opts)
            for key in given:
                canon = _names(cls)[key]
                assert other.options[canon] == driver.options[canon]
        state = self._run(lambda: _status(self._build(via_file)))
        assert state in (PowerState.ON, PowerState.OFF), f"status, secrets from files: {state}"
        _assert_clean([caplog.text], secrets, "logs")

    # -- actions against the device ------------------------------------------------------
    def test_status(
        self,
        device_options: dict[str, Any],
        device_power: PowerProbe | None,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """status() reads on or off, the same as the device says."""
        self._skip("status")
        caplog.set_level(logging.DEBUG)
        driver = self._build(device_options)
        fencer = self._fencer(tmp_path)

        async def body() -> None:
            state = await _status(driver)
            assert isinstance(state, PowerState) and state in (PowerState.ON, PowerState.OFF)
            self._power_ok(device_power, state.value, "status")
            res = await fencer.run_device(driver, "status")
            assert res.ok and res.state == state.value, res
            await driver.close()

        self._run(body)
        _assert_clean([caplog.text], _secrets(driver), "logs")

    def test_off_confirmed_and_idempotent(
        self,
        device_options: dict[str, Any],
        device_power: PowerProbe | None,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """off (through the fencer: confirmed by status) from on, then off again."""
        self._skip("power")
        caplog.set_level(logging.DEBUG)
        driver = self._build(device_options)
        fencer = self._fencer(tmp_path)

        async def body() -> None:
            on = await fencer.run_device(driver, "on")
            assert on.ok and on.state == "on", f"on: {on}"
            self._power_ok(device_power, "on", "after on")
            off = await fencer.run_device(driver, "off")
            assert off.ok and off.state == "off", f"off: {off}"
            assert await _status(driver) == PowerState.OFF, "status after off is not off"
            self._power_ok(device_power, "off", "after off")
            again = await fencer.run_device(driver, "off")
            assert again.ok and again.state == "off", f"off when already off: {again}"
            self._power_ok(device_power, "off", "after a second off")
            await driver.close()

        self._run(body)
        _assert_clean([caplog.text, _read(fencer.history)], _secrets(driver), "logs/history")

    def test_on_after_off_and_idempotent(
        self,
        device_options: dict[str, Any],
        device_power: PowerProbe | None,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """on after off is on (confirmed), and on again stays on."""
        self._skip("power")
        caplog.set_level(logging.DEBUG)
        driver = self._build(device_options)
        fencer = self._fencer(tmp_path)

        async def body() -> None:
            off = await fencer.run_device(driver, "off")
            assert off.ok and off.state == "off", f"off: {off}"
            on = await fencer.run_device(driver, "on")
            assert on.ok and on.state == "on", f"on after off: {on}"
            assert await _status(driver) == PowerState.ON, "status after on is not on"
            self._power_ok(device_power, "on", "after on")
            again = await fencer.run_device(driver, "on")
            assert again.ok and again.state == "on", f"on when already on: {again}"
            self._power_ok(device_power, "on", "after a second on")
            await driver.close()

        self._run(body)
        _assert_clean([caplog.text, _read(fencer.history)], _secrets(driver), "logs/history")

    def test_reboot(
        self,
        device_options: dict[str, Any],
        device_power: PowerProbe | None,
        tmp_path: Path,
    ) -> None:
        """reboot (native, or off-verified-on by the fencer) ends on."""
        self._skip("reboot")
        driver = self._build(device_options)
        res = self._run(lambda: self._fencer(tmp_path).run_device(driver, "reboot"))
        assert res.ok and res.state == "on", f"reboot: {res}"
        self._power_ok(device_power, "on", "after reboot")

    def test_monitor(self, device_options: dict[str, Any], tmp_path: Path) -> None:
        """monitor() succeeds on a working device (reachable, credentials good)."""
        self._skip("monitor")
        driver = self._build(device_options)
        fencer = self._fencer(tmp_path)

        async def body() -> None:
            assert await driver.monitor() is None
            res = await fencer.run_device(driver, "monitor")
            assert res.ok, f"monitor: {res}"
            await driver.close()

        self._run(body)

    def test_list(self, device_options: dict[str, Any], tmp_path: Path) -> None:
        """list() returns Ports (unique ids) when declared, NotSupportedError otherwise."""
        self._skip("list")
        cls = self.driver_class()
        driver = self._build(device_options)
        if "list" not in cls.actions:
            with pytest.raises(NotSupportedError):
                self._run(driver.list)
            return
        fencer = self._fencer(tmp_path)

        async def body() -> None:
            ports = await driver.list()
            assert isinstance(ports, list) and ports, f"list returned {ports!r}"
            for port in ports:
                assert isinstance(port, Port), f"list item {port!r} is not a Port"
                assert isinstance(port.id, str) and port.id, f"port id {port.id!r}"
                assert isinstance(port.state, PowerState)
            ids = [p.id for p in ports]
            assert len(ids) == len(set(ids)), f"duplicate port ids: {ids}"
            res = await fencer.run_device(driver, "list")
            assert res.ok and res.ports is not None and len(res.ports) == len(ports), res
            await driver.close()

        self._run(body)

    # -- failure paths -----------------------------------------------------------------
    def test_unreachable_times_out(
        self,
        unreachable_options: dict[str, Any] | None,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Nothing answers: UnreachableError or FenceTimeoutError within timeout + margin,
        without blocking the event loop, and the fencer reports it as such."""
        self._skip("unreachable")
        if unreachable_options is None:
            pytest.fail(
                f"{type(self).__name__}: define an 'unreachable_options' fixture (options "
                "for an address where nothing answers), or skip_checks={'unreachable': why}",
                pytrace=False,
            )
        caplog.set_level(logging.DEBUG)
        bound = self.unreachable_timeout
        limit = bound + self.timeout_margin
        driver = self._build({**unreachable_options, "timeout": bound})
        fencer = self._fencer(tmp_path)

        async def body() -> tuple[BaseException | None, float, ActionResult]:
            # One after the other: a device may take one session at a time (serial).
            t0 = time.monotonic()
            exc = await _failure(driver.status(), 2 * limit)
            elapsed = time.monotonic() - t0
            res = await fencer.run_device(driver, "status")
            await driver.close()
            return exc, elapsed, res

        exc, elapsed, res = self._run(body)
        assert exc is not None, f"status returned after {elapsed:.1f}s with nobody answering"
        assert isinstance(exc, UnreachableError | FenceTimeoutError), (
            f"expected UnreachableError or FenceTimeoutError, got {_describe(exc)}"
        )
        assert elapsed <= limit, f"took {elapsed:.1f}s with timeout={bound:g}s"
        assert not res.ok and res.error_kind in ("unreachable", "timeout"), res
        assert res.duration <= limit, f"fencer status took {res.duration:.1f}s"
        shown = [str(exc), *_format(exc), caplog.text, res.message]
        _assert_clean(shown, _secrets(driver), "errors/logs")

    def test_wrong_credentials(
        self,
        device_options: dict[str, Any],
        wrong_credentials_options: dict[str, Any] | None,
        device_power: PowerProbe | None,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Refused credentials: AuthError (not unreachable or timeout); an off with them
        changes nothing; neither the wrong nor the right secret shows anywhere."""
        self._skip("credentials")
        if wrong_credentials_options is None:
            pytest.skip(f"{self.driver_class().name} declares no credentials")
        caplog.set_level(logging.DEBUG)
        good = self._build(device_options)
        driver = self._build(wrong_credentials_options)
        secrets = _secrets(good) + _secrets(driver)
        before = device_power() if device_power is not None else None
        limit = float(driver.options.get("timeout") or 10.0) + self.timeout_margin
        fencer = self._fencer(tmp_path)

        async def body() -> tuple[BaseException | None, ActionResult]:
            exc = await _failure(driver.status(), 2 * limit)
            res = await fencer.run_device(driver, "off")
            await driver.close()
            return exc, res

        exc, res = self._run(body)
        assert isinstance(exc, AuthError), f"expected AuthError, got {_describe(exc)}"
        assert not res.ok and res.error_kind == "auth_failed", res
        if before is not None:
            self._power_ok(device_power, before, "after an off with wrong credentials")
        shown = [str(exc), *_format(exc), caplog.text, _read(fencer.history)]
        _assert_clean(shown, secrets, "errors/logs/history")

    # -- integration -------------------------------------------------------------------
    def test_fence_through_fence_cfg(
        self,
        device_options: dict[str, Any],
        device_power: PowerProbe | None,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """The driver in a fence.cfg (secrets from files): dry-run check, fence (confirmed
        off), unfence; history and logs without secrets."""
        self._skip("fence_cfg")
        cls = self.driver_class()
        caplog.set_level(logging.DEBUG)
        text = _cfg_text(cls, device_options, tmp_path)
        cfg = parse_fence_config(text, str(tmp_path / "fence.cfg"))
        fencer = self._fencer(tmp_path, cfg)

        async def body() -> None:
            report = await fencer.check(KIT_NODE)
            assert report.ok and report.budget_seconds > 0, report
            res = await fencer.fence(KIT_NODE)
            assert res.ok and res.level == 1, res
            self._power_ok(device_power, "off", "after fence")
            back = await fencer.fence(KIT_NODE, action="on")
            assert back.ok, back
            self._power_ok(device_power, "on", "after unfence")

        self._run(body)
        records = fencer.history.records(KIT_NODE)
        assert [(r.action, r.ok) for r in records] == [("off", True), ("on", True)]
        secrets = _secrets(self._build(device_options))
        shown = [text, caplog.text, _read(fencer.history), cfg.render_commands([KIT_NODE])]
        _assert_clean(shown, secrets, "fence.cfg/logs/history")

    def test_entry_point(self) -> None:
        """driver_name resolves through the installed plugins, without plugin errors."""
        self._skip("entry_point")
        if not self.driver_name:
            pytest.skip("driver given as a class; set driver_name to check its entry point")
        registry = PluginRegistry()
        cls = _installed_driver(self.driver_name, registry)
        if self.driver is not None:
            assert cls is self.driver, f"'{self.driver_name}' resolves to {cls!r}"
        owner = registry.owner("hafence_fence_drivers", cls.name)
        if owner is not None:
            assert not [e for e in registry.errors if e.plugin == owner], registry.errors


# -- helpers ---------------------------------------------------------------------------
def _installed_driver(name: str, registry: PluginRegistry | None = None) -> type[FenceDriver]:
    from hafence.fence.chain import driver_class

    return driver_class(name, registry or PluginRegistry())


def _names(cls: type[FenceDriver]) -> dict[str, str]:
    return {n: p.name for p in cls.all_params() for n in (p.name, *p.aliases)}


def _param(cls: type[FenceDriver], name: str) -> Param:
    return next(p for p in cls.all_params() if p.name == name)


def _secret_keys(cls: type[FenceDriver], options: Mapping[str, Any]) -> list[str]:
    names = _names(cls)
    return [
        k
        for k, v in options.items()
        if k in names and _param(cls, names[k]).secret and v is not None and _clear(v)
    ]


def _clear(value: Any) -> str:
    return value.reveal() if isinstance(value, Secret) else str(value)


def _secrets(driver: FenceDriver) -> list[str]:
    return [
        v.reveal()
        for v in driver.options.values()
        if isinstance(v, Secret) and len(v.reveal()) >= MIN_SECRET_LEN
    ]


def _assert_clean(texts: Iterable[str], secrets: list[str], where: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"a secret value shows in {where}"


def _read(history: FenceHistory | None) -> str:
    if history is None or not history.path.exists():
        return ""
    return history.path.read_text()


def _format(exc: BaseException) -> list[str]:
    return traceback.format_exception(exc)


def _describe(exc: BaseException | None) -> str:
    return "success" if exc is None else f"{type(exc).__name__}: {exc}"


async def _status(driver: FenceDriver) -> PowerState:
    return await driver.status()


async def _failure(call: Awaitable[Any], hard_limit: float) -> BaseException | None:
    """The exception a driver call raised (None if it succeeded); fails the test when
    the call ignores its time-out altogether."""
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait({task}, timeout=hard_limit)
    if not done:
        task.cancel()
        pytest.fail(f"no answer after {hard_limit:g}s: the driver ignores its timeout")
    return task.exception()


def _cfg_text(cls: type[FenceDriver], options: Mapping[str, Any], tmp_path: Path) -> str:
    """A fence.cfg for KIT_NODE with these options; secret values go to files."""
    names = _names(cls)
    args: list[str] = []
    for i, (key, value) in enumerate(options.items()):
        if value is None:
            continue
        canon = names.get(key)
        if canon is not None and _param(cls, canon).secret:
            path = tmp_path / f"cfg-secret{i}"
            path.write_text(_clear(value) + "\n")
            path.chmod(0o600)
            key, value = f"{canon}_file", str(path)
        elif isinstance(value, bool):
            value = "1" if value else "0"
        args.append(f"{key}={_quote(str(value))}")
    return f"device {KIT_LABEL} {cls.name} {' '.join(args)}\nconnect {KIT_LABEL} node={KIT_NODE}\n"


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text) if text else "''"
