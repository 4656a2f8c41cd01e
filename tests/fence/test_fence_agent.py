"""The fence_agent bridge: ClusterLabs fence_ipmilan against a real ipmi_sim, plus
a tiny stand-in agent that records how it was called (argv, stdin)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hafence.errors import UnknownDriverError
from hafence.fence import FenceHistory, Fencer, build_driver, driver_class, parse_fence_config
from hafence.fence.driver import PowerState
from hafence.secrets import Secret

pytestmark = pytest.mark.skipif(
    not any(os.path.exists(f"{d}/fence_ipmilan") for d in ("/usr/sbin", "/sbin", "/usr/bin")),
    reason="Debian fence-agents not installed (scripts/install.sh installs it)",
)


def fencer(lab, text: str, tmp_path: Path, **kw) -> Fencer:
    cfg = parse_fence_config(text, str(tmp_path / "fence.cfg"))
    kw.setdefault("retries", 0)
    return Fencer(cfg, lab.registry, FenceHistory(tmp_path / "h.jsonl"), actor="nodeA", **kw)


def test_metadata_becomes_param_schema(lab) -> None:
    cls = driver_class("fence_ipmilan", lab.registry)
    params = {p.name: p for p in cls.all_params()}
    assert params["password"].secret and "passwd" in params["password"].aliases
    assert params["lanplus"].type is bool and params["ipport"].type is int
    assert "action" not in params  # the bridge owns the action
    assert params["power_timeout"].default == 20.0  # the fencer's common param
    assert cls.name == "fence_ipmilan" and "reboot" not in cls.actions
    with pytest.raises(UnknownDriverError):
        driver_class("fence_does_not_exist", lab.registry)


async def test_status_off_on_verified_against_ipmi_sim(lab, ipmi_sim, tmp_path: Path) -> None:
    text = f"device bmc fence_ipmilan {ipmi_sim.agent_args()}\nconnect bmc node=n1\n"
    f = fencer(lab, text, tmp_path)
    drv = build_driver(f.chain("n1")[0].devices[0], lab.registry)
    assert isinstance(drv.options["password"], Secret)
    assert (await f.run_device(drv, "status")).state == "on"
    res = await f.fence("n1")
    assert res.ok and res.level == 1
    assert ipmi_sim.power == "off"
    assert "set power 0" in ipmi_sim.calls()
    on = await f.run_device(drv, "on", node="n1")
    assert on.ok and on.state == "on" and ipmi_sim.power == "on"
    assert [r.action for r in f.history.records("n1")] == ["off", "on"]
    assert ipmi_sim.password not in (tmp_path / "h.jsonl").read_text()


async def test_reboot_is_off_verified_then_on(lab, ipmi_sim, tmp_path: Path) -> None:
    text = f"device bmc fence_ipmilan {ipmi_sim.agent_args()}\nconnect bmc node=n1\n"
    f = fencer(lab, text, tmp_path)
    res = await f.fence("n1", action="reboot")
    assert res.ok and ipmi_sim.power == "on"
    sets = [c for c in ipmi_sim.calls() if c.startswith("set power")]
    assert sets == ["set power 0", "set power 1"]
    dev = res.attempts[0].levels[0].devices[0]
    assert dev.state == "on" and dev.message == "off, verified, on"
    json.loads(res.to_json())


async def test_generic_fence_agent_driver(lab, ipmi_sim) -> None:
    cls = lab.registry.fence_driver("fence_agent")
    drv = cls({"agent": "fence_ipmilan", **ipmi_sim.agent_options()})
    assert drv.label == "fence_ipmilan"
    assert await drv.status() == PowerState.ON
    ipmi_sim.set_power(False)
    assert await drv.status() == PowerState.OFF


async def test_wrong_password_is_auth_failed(lab, ipmi_sim, tmp_path: Path) -> None:
    cls = driver_class("fence_ipmilan", lab.registry)
    drv = cls(ipmi_sim.agent_options(password="not-the-password"), label="bmc")
    res = await Fencer(None, lab.registry).run_device(drv, "off", record=False)
    assert not res.ok and res.error_kind == "auth_failed"
    assert "not-the-password" not in res.message
    assert ipmi_sim.power == "on"


async def test_closed_port_times_out_within_bound(lab, closed_udp_port: int) -> None:
    cls = driver_class("fence_ipmilan", lab.registry)
    opts = {"ip": "127.0.0.1", "ipport": closed_udp_port, "username": "u", "password": "p"}
    drv = cls({**opts, "lanplus": True, "cipher": "3", "timeout": 1}, label="dead")
    res = await Fencer(None, lab.registry).run_device(drv, "status", record=False)
    assert not res.ok and res.error_kind == "timeout"
    assert "1s" in res.message
    # agent and ipmitool were sent SIGKILL; a loaded machine may take a moment to
    # finish them off, so wait for that (bounded), then none may be left
    assert _wait_until_none_mention(str(closed_udp_port), within=10.0)


# -- secrets never on a command line ---------------------------------------------------
RECORDER = """#!/bin/sh
# stands in front of the real ipmitool and writes down the argv it was given
printf '%s\\n' "$*" >> '{log}'
exec /usr/bin/ipmitool "$@"
"""


class CmdlineScanner(threading.Thread):
    """Reads /proc/*/cmdline of every process, again and again, until stopped; keeps
    every command line that contains ``needle``."""

    def __init__(self, needle: str) -> None:
        super().__init__(daemon=True)
        self.needle = needle.encode()
        self.hits: list[str] = []
        self.passes = 0
        self._done = threading.Event()

    def run(self) -> None:
        me = str(os.getpid())
        while not self._done.is_set():
            for p in Path("/proc").iterdir():
                if not p.name.isdigit() or p.name == me:
                    continue
                try:
                    cmd = (p / "cmdline").read_bytes()
                except OSError:
                    continue
                if self.needle in cmd:
                    self.hits.append(cmd.replace(b"\0", b" ").decode(errors="replace"))
            self.passes += 1

    def stop(self) -> None:
        self._done.set()
        self.join()


def _recorder(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "ipmitool-argv.log"
    script = tmp_path / "ipmitool-recorder"
    script.write_text(RECORDER.format(log=log))
    script.chmod(0o755)
    return script, log


def test_scanner_sees_a_password_on_a_command_line() -> None:
    secret = "Scanner-Ctl-" + os.urandom(4).hex()
    scanner = CmdlineScanner(secret)
    scanner.start()
    proc = subprocess.Popen(["sh", "-c", "sleep 30; :", secret])
    try:
        deadline = time.monotonic() + 10
        while not scanner.hits and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
        scanner.stop()
    assert scanner.hits and secret in scanner.hits[0]


async def test_fence_ipmilan_password_never_on_a_command_line(
    lab, ipmi_sim, tmp_path: Path
) -> None:
    """status, off (verified), on through the real fence_ipmilan: ipmitool gets -E and the
    password in its environment; no process ever shows the password in its cmdline."""
    recorder, log = _recorder(tmp_path)
    cls = driver_class("fence_ipmilan", lab.registry)
    drv = cls(ipmi_sim.agent_options(ipmitool_path=str(recorder)), label="bmc")
    scanner = CmdlineScanner(ipmi_sim.password)
    scanner.start()
    try:
        f = Fencer(None, lab.registry)
        assert (await f.run_device(drv, "status", record=False)).state == "on"
        assert (await f.run_device(drv, "off", record=False)).ok
        assert (await f.run_device(drv, "on", record=False)).ok
    finally:
        scanner.stop()
    assert ipmi_sim.power == "on" and "set power 0" in ipmi_sim.calls()
    argvs = log.read_text().splitlines()
    assert len(argvs) >= 4  # status; off and its status check; on and its status check
    for argv in argvs:
        assert ipmi_sim.password not in argv
        assert " -E " in f" {argv} " and " -P " not in f" {argv} "
    assert scanner.passes > 0 and scanner.hits == []


async def test_without_the_bridge_ipmitool_gets_the_password(ipmi_sim, tmp_path: Path) -> None:
    """The leak the bridge prevents, shown with the same recorder: fence_ipmilan given the
    password itself puts it on ipmitool's command line."""
    recorder, log = _recorder(tmp_path)
    opts = {**ipmi_sim.agent_options(ipmitool_path=str(recorder)), "action": "status"}
    opts = {k: ("1" if v is True else v) for k, v in opts.items() if k != "poll_interval"}
    stdin = "".join(f"{k}={v}\n" for k, v in opts.items()).encode()
    proc = await asyncio.create_subprocess_exec(
        shutil.which("fence_ipmilan", path="/usr/sbin:/sbin:/usr/bin"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await proc.communicate(stdin)
    assert proc.returncode == 0
    assert f"-P {ipmi_sim.password}" in log.read_text()


async def test_password_script_is_run_by_hafence(lab, ipmi_sim, tmp_path: Path) -> None:
    script = tmp_path / "get-pw"
    script.write_text(f"#!/bin/sh\necho '{ipmi_sim.password}'\n")
    script.chmod(0o700)
    cls = driver_class("fence_ipmilan", lab.registry)
    opts = {k: v for k, v in ipmi_sim.agent_options().items() if k != "password"}
    drv = cls({**opts, "password_script": str(script)}, label="bmc")
    assert isinstance(drv.options["password"], Secret)
    assert "password_script" not in drv.options  # resolved here, never run by the agent
    res = await Fencer(None, lab.registry).run_device(drv, "status", record=False)
    assert res.ok and res.state == "on"


@pytest.mark.parametrize(
    ("output", "kind"),
    [
        # ipmitool -v, as fence_ipmilan logs it, against ipmi_sim (IPMI 2.0 and 1.5)
        (
            "DEBUG: 1 > RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session",
            "auth_failed",
        ),
        (
            "RAKP 2 message indicates an error : unauthorized name\nError: Unable to establish "
            "IPMI v2 / RMCP+ session",
            "auth_failed",
        ),
        ("Activate Session command failed\nError: Unable to establish LAN session", "auth_failed"),
        (
            "Get Auth Capabilities error\nError issuing Get Channel Authentication Capabilities "
            "request\nError: Unable to establish IPMI v2 / RMCP+ session",
            "unreachable",
        ),
        (
            "Get Auth Capabilities command failed\nError: Unable to establish LAN session",
            "unreachable",
        ),
        # the closing line alone says nothing about the cause
        ("Error: Unable to establish IPMI v2 / RMCP+ session", "device_error"),
    ],
)
def test_ipmitool_output_is_classified(lab, output: str, kind: str) -> None:
    cls = driver_class("fence_ipmilan", lab.registry)
    drv = cls({"ip": "127.0.0.1", "username": "u", "password": "p"}, label="bmc")
    err = drv._failure("status", 1, "", output + "\nERROR: Failed: Unable to obtain correct plug")
    assert err.kind == kind


async def test_wrong_password_over_ipmi_1_5_is_auth_failed(lab, ipmi_sim) -> None:
    cls = driver_class("fence_ipmilan", lab.registry)
    opts = {k: v for k, v in ipmi_sim.agent_options().items() if k not in ("lanplus", "cipher")}
    drv = cls({**opts, "password": "not-the-password", "timeout": 30}, label="bmc")
    res = await Fencer(None, lab.registry).run_device(drv, "status", record=False)
    assert not res.ok and res.error_kind == "auth_failed"
    assert "not-the-password" not in res.message


def test_config_warnings_name_secrets_that_reach_argv(lab) -> None:
    ipmilan = driver_class("fence_ipmilan", lab.registry)
    plain = ipmilan({"ip": "h", "username": "u", "password": "pw"}, label="bmc")
    assert plain.config_warnings() == []  # the password goes through the environment
    kg = ipmilan({"ip": "h", "password": "pw", "hexadecimal_kg": "0123abcd"}, label="bmc")
    [(field, message)] = kg.config_warnings()
    assert field == "hexadecimal_kg" and message.startswith("fence_ipmilan runs ipmitool")
    sudo = ipmilan({"ip": "h", "password": "pw", "use_sudo": "1"}, label="bmc")
    assert [f for f, _ in sudo.config_warnings()] == ["password"]
    assert b"password=pw" in sudo._stdin("status")  # sudo clears the environment
    assert b"password=" not in plain._stdin("status") and plain._env()["IPMI_PASSWORD"] == "pw"
    ifmib = driver_class("fence_ifmib", lab.registry)
    sw = ifmib({"ip": "h", "community": "private", "plug": "1"}, label="sw")
    [(field, message)] = sw.config_warnings()
    assert field == "community" and "fence_ifmib" in message and "ps" in message
    assert sw.config_warnings() and not ifmib({"ip": "h", "plug": "1"}).config_warnings()


async def test_chain_falls_through_dead_and_half_failed_levels(
    lab, ipmi_sims, closed_udp_port: int, tmp_path: Path
) -> None:
    a, b = ipmi_sims(), ipmi_sims()
    dead = (
        f"ip=127.0.0.1 ipport={closed_udp_port} username=admin password=x lanplus cipher=3 "
        "timeout=1 power_timeout=1"
    )
    text = (
        # level 1: dual PSU, PSU 2's BMC does not answer (the agent gives up after its
        # power_timeout, 1 s) -> the level fails although PSU 1 is off
        f"device psu:1 fence_ipmilan {a.agent_args()}\n"
        f"device psu:2 fence_ipmilan {dead}\n"
        "connect psu:1 node=n1\nconnect psu:2 node=n1\n"
        # level 2: a good BMC
        f"device bmc fence_ipmilan {b.agent_args()}\nconnect bmc node=n1\n"
    )
    f = fencer(lab, text, tmp_path)
    res = await f.fence("n1")
    assert res.ok and res.level == 2 and res.level_name == "bmc"
    lv1 = res.attempts[0].levels[0]
    assert not lv1.ok
    assert {d.device: d.error_kind for d in lv1.devices} == {"psu:1": None, "psu:2": "unreachable"}
    assert a.power == "off" and b.power == "off"
    [rec] = f.history.records("n1")
    assert rec.ok and rec.level == 2 and rec.devices == ["psu:1", "psu:2", "bmc"]


async def test_bmc_that_never_powers_off_is_still_on(lab, ipmi_sim, tmp_path: Path) -> None:
    ipmi_sim.set_stuck()
    text = f"device bmc fence_ipmilan {ipmi_sim.agent_args(power_timeout=1)}\nconnect bmc node=n1\n"
    f = fencer(lab, text, tmp_path)
    res = await f.fence("n1")
    assert not res.ok and res.error_kind == "still_on"
    assert ipmi_sim.power == "on" and "set power 0" in ipmi_sim.calls()


async def test_dry_run_check_touches_no_power(lab, ipmi_sims, tmp_path: Path) -> None:
    a, b = ipmi_sims(), ipmi_sims()
    text = (
        f"device x fence_ipmilan {a.agent_args()}\nconnect x node=n1\n"
        f"device y fence_ipmilan {b.agent_args(password='wrong')}\nconnect y node=n1\n"
    )
    rep = await fencer(lab, text, tmp_path, retries=1, backoff=2).check("n1")
    assert not rep.ok
    by = {c.device: c for c in rep.devices}
    assert by["x"].ok and by["x"].state == "on"
    assert by["y"].error_kind == "auth_failed"
    # x: off request (10 + agent's own power_timeout 5 + 1) + power_timeout 5 + one
    # status 10 = 31; y the same; levels run one after another
    assert rep.attempt_budget_seconds == 62 and rep.budget_seconds == 62 * 2 + 2
    assert a.power == b.power == "on"
    assert not [c for c in a.calls() + b.calls() if c.startswith("set")]


# -- the protocol, checked with a stand-in agent ------------------------------------
PROBE = r'''#!{python}
import json, os, sys, time
d = os.path.dirname(os.path.abspath(__file__))
if sys.argv[1:] == ["-o", "metadata"]:
    print("""<?xml version="1.0" ?><resource-agent name="fence_h1probe" shortdesc="probe">
<parameters>
<parameter name="action" required="1"><content type="string"/></parameter>
<parameter name="ip" required="1" obsoletes="ipaddr"><content type="string"/></parameter>
<parameter name="ipaddr" required="1" deprecated="1"><content type="string"/></parameter>
<parameter name="password" obsoletes="passwd"><content type="string"/></parameter>
<parameter name="passwd" deprecated="1"><content type="string"/></parameter>
<parameter name="plug"><content type="string"/></parameter>
<parameter name="ssl"><content type="boolean"/></parameter>
<parameter name="power_timeout"><content type="second" default="20"/></parameter>
</parameters><actions><action name="on"/><action name="off"/><action name="status"/>
<action name="list"/><action name="monitor"/></actions></resource-agent>""")
    sys.exit(0)
stdin = sys.stdin.read()
opts = dict(l.split("=", 1) for l in stdin.splitlines() if "=" in l)
with open(os.path.join(d, "calls.jsonl"), "a") as fh:
    fh.write(json.dumps({{"argv": sys.argv, "stdin": stdin, "pid": os.getpid()}}) + "\n")
mode = open(os.path.join(d, "mode")).read().strip()
state = os.path.join(d, "power")
if mode == "hang":
    time.sleep(600)
act = opts["action"]
if act == "status":
    sys.exit(0 if open(state).read().strip() == "on" else 2)
if act in ("on", "off"):
    open(state, "w").write(act)
    sys.exit(0)
if act == "list":
    print("1,web01\n2,db01")
    sys.exit(0)
if act == "monitor":
    sys.exit(0)
sys.exit(1)
'''


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("agents")
    agent = d / "fence_h1probe"
    agent.write_text(PROBE.format(python=sys.executable))
    agent.chmod(0o755)
    return d


@pytest.fixture
def probe(probe_dir: Path, monkeypatch) -> Path:
    monkeypatch.setenv("PATH", f"{probe_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    (probe_dir / "mode").write_text("ok\n")
    (probe_dir / "power").write_text("on\n")
    (probe_dir / "calls.jsonl").unlink(missing_ok=True)
    return probe_dir


def _calls(probe: Path) -> list[dict]:
    return [json.loads(x) for x in (probe / "calls.jsonl").read_text().splitlines()]


async def test_options_go_on_stdin_never_argv(lab, probe: Path, tmp_path: Path) -> None:
    text = "device p fence_h1probe ipaddr=10.0.0.1 passwd=Sup3rS3cret ssl action=reboot\n"
    text += "connect p node=n1 plug=7\n"
    f = fencer(lab, text, tmp_path)
    res = await f.fence("n1")
    assert res.ok and (probe / "power").read_text() == "off"
    calls = _calls(probe)
    assert [c["stdin"].splitlines()[0] for c in calls] == ["action=off", "action=status"]
    for c in calls:
        assert len(c["argv"]) == 1 and "Sup3rS3cret" not in json.dumps(c["argv"])
        lines = c["stdin"].splitlines()
        assert {"ip=10.0.0.1", "password=Sup3rS3cret", "ssl=1", "plug=7"} <= set(lines)
        assert not any(x.startswith(("timeout", "delay", "poll_interval")) for x in lines)
    # the agent verifies off itself: it gets the fencer's power_timeout (and no
    # power_wait, which this agent does not declare)
    assert "power_timeout=20" in calls[0]["stdin"].splitlines()
    assert "power_wait" not in calls[0]["stdin"]
    assert "power_timeout=20" not in calls[1]["stdin"]


def test_line_breaks_cannot_smuggle_options(lab, probe: Path) -> None:
    from hafence.errors import ParamError

    cls = driver_class("fence_h1probe", lab.registry)
    with pytest.raises(ParamError) as info:
        cls({"ip": "x", "password": "pw\nipmitool_path=/tmp/evil"})
    assert info.value.field == "password"


async def test_list_and_exit_codes(lab, probe: Path) -> None:
    cls = driver_class("fence_h1probe", lab.registry)
    drv = cls({"ip": "x"}, label="p")
    assert [(p.id, p.alias) for p in await drv.list()] == [("1", "web01"), ("2", "db01")]
    (probe / "power").write_text("off\n")
    assert await drv.status() == PowerState.OFF
    (probe / "mode").write_text("hang\n")
    res = await Fencer(None, lab.registry).run_device(
        cls({"ip": "x", "timeout": 0.5}, label="p"), "status", record=False
    )
    assert res.error_kind == "timeout"
    pid = _calls(probe)[-1]["pid"]
    assert _gone(pid)  # killed, not left running


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:  # no such process
        return True


def _wait_until_none_mention(needle: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while _processes_mentioning(needle):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _processes_mentioning(needle: str) -> list[str]:
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd and str(os.getpid()) != p.name:
            found.append(cmd)
    return found
