"""Fuzzing the ``hafence`` command line: mutated argument lists of real invocations.

Each run goes through click's CliRunner (in-process, the same code as the console
script). A run is *wrong* when it ends in a traceback or an "internal error", or with an
exit code other than 0 (done), 1 (the device or action failed) or 2 (usage or config
error), or exits 2 without saying why. The devices are Redfish BMCs on a closed loopback
TCP port (connection refused at once), so every action finishes quickly whatever the
arguments; ``demo`` (starts a BMC) and ``watchdog`` (helper core's) are not fuzzed here.
Commands run inside the lab directory, and no absolute path in the vocabulary is one a
command could create or change (a history path like /dev/null is refused, not chmod'ed).
"""

from __future__ import annotations

import contextlib
import random
import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from click.testing import CliRunner

from hafence.cli.ha_manager import cli as ha_cli
from hafence.cli.main import cli
from hafence.fence import FenceHistory, FenceRecord
from tests.fuzz.mutate import INTERESTING

REPO = Path(__file__).resolve().parents[2]
ALLOWED_EXIT = (0, 1, 2)


def _closed_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class CliLab:
    """fence.cfg, a password file and a fence history in ``dir``; argv seeds using them."""

    dir: Path
    port: int = field(default_factory=_closed_tcp_port)
    exit_codes: Counter[int] = field(default_factory=Counter)  # of every run_argv

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pw = self.dir / "bmc.pw"
        self.pw.write_text("Cli-fuzz-pw\n")
        self.pw.chmod(0o600)
        self.cfg = self.dir / "fence.cfg"
        self.cfg.write_text(
            f"device bmc redfish ip=127.0.0.1 ipport={self.port} ssl=0 username=u "
            f"password_file={self.pw} timeout=0.5 power_timeout=0.5\n"
            "connect bmc node=node1\n"
            f"device psu:1 redfish ip=127.0.0.1 ipport={self.port} ssl=0 "
            f"password_file={self.pw} timeout=0.5\n"
            f"device psu:2 redfish ip=127.0.0.1 ipport={self.port} ssl=0 "
            f"password_file={self.pw} timeout=0.5\n"
            "connect psu:1 node=node2\nconnect psu:2 node=node2\n"
        )
        self.cfg.chmod(0o600)
        self.history = self.dir / "history.jsonl"
        h = FenceHistory(self.history)
        for node, ok in (("node1", True), ("node2", False)):
            h.append(FenceRecord(actor="cli", node=node, action="off", ok=ok, devices=["bmc"]))
        with open(self.history, "ab") as fh:
            fh.write(b'{"actor": "torn"')
        self.state = self.dir / "state"
        self.notutf8 = self.dir / "latin1.cfg"
        self.notutf8.write_bytes(b"# caf\xe9\ndevice a redfish ip=h\n")

    def seeds(self) -> list[list[str]]:
        cfg, pw, hist = str(self.cfg), str(self.pw), str(self.history)
        driver = ["--driver", "redfish", "-o", "ip=127.0.0.1", "-o", f"ipport={self.port}",
                  "-o", "ssl=0", "-o", "username=u", "--password-file", pw]  # fmt: skip
        dev = ["--config", cfg, "--device", "bmc", "--node", "node1"]
        scenario = str(REPO / "tests" / "ha" / "scenarios" / "test-basic1")
        return [
            ["config", "check", cfg],
            ["config", "check", "--config", cfg, "--output", "json"],
            ["chain", "node1", "--config", cfg],
            ["--output", "json", "chain", "node2", "--config", cfg],
            ["fence", "node1", "--dry-run", "--config", cfg, "--retries", "0", "--timeout", "1"],
            ["fence", "node2", "--config", cfg, "--action", "reboot"],
            ["history", "--history", hist, "--limit", "5"],
            ["history", "node1", "--history", hist, "--output", "json"],
            ["device", "status", *dev, "--timeout", "0.5"],
            ["device", "status", *driver, "--timeout", "0.5", "-v"],
            ["device", "monitor", *driver, "--label", "x"],
            ["device", "list", *dev, "--output", "json"],
            ["device", "off", *dev, "--history", hist],
            ["device", "on", *driver, "--yes", "--history", hist],
            ["device", "reboot", "--config", cfg, "--device", "psu:2", "--yes"],
            ["device", "diag", *driver, "--yes"],
            ["driver", "metadata", "redfish", "--format", "xml"],
            ["driver", "metadata", "ipmi", "--output", "json"],
            ["drivers", "list"],
            ["plugins", "list", "--output", "json"],
            ["sim", "compare", "-q", scenario],
            ["--version"],
            ["device", "--help"],
        ]

    def vocabulary(self) -> list[str]:
        words = [
            "--timeout", "--retries", "--backoff", "--limit", "--output", "--config",
            "--history", "--device", "--node", "--driver", "-o", "--option", "--password-file",
            "--password-env", "--password", "--label", "--format", "--dry-run", "--action",
            "--yes", "-v", "-vv", "--help", "json", "text", "xml", "node1", "node2", "bmc",
            "psu:1", "psu:3", "bmc:x", "redfish", "ipmi", "fence_ipmilan", "fence_nonexistent",
            "status", "off", "on", "reboot", "list", "monitor", "diag", "config", "check",
            "chain", "fence", "history", "device", "driver", "metadata", "drivers", "plugins",
            "sim", "run", "compare", "timeout=inf", "timeout=nan", "timeout=-1", "port=70000",
            "ipport=-1", "password", "password_file=", "password_file=/dev/zero",
            "password_env=NOPE", "password_script=false", "bogus=1", "=x", "ip",
            "power_timeout=1e309", "delay=-5", "ssl=maybe", "PATH", "/dev/zero", "/etc",
            "/nonexistent", str(self.notutf8), str(self.state), str(self.history), str(self.cfg),
        ]  # fmt: skip
        return words + list(INTERESTING)


def mutate_argv(argv: list[str], rnd: random.Random, vocabulary: list[str]) -> list[str]:
    """1-3 token edits: drop, repeat, swap, replace with a vocabulary word, insert one,
    or give an option (or a ``-o KEY=VALUE``) an interesting value."""
    out = list(argv)
    for _ in range(rnd.choice((1, 1, 2, 3))):
        op = rnd.randrange(7)
        i = rnd.randrange(len(out)) if out else 0
        options = [j for j, w in enumerate(out[:-1]) if w.startswith("-")]
        if op >= 5 and options:  # an option's value, or the value of a -o KEY=VALUE
            j = rnd.choice(options) + 1
            key, eq, _ = out[j].partition("=")
            value = rnd.choice(INTERESTING)
            out[j] = f"{key}={value}" if eq and op == 6 else value
        elif op == 0 and out:
            del out[i]
        elif op == 1 and out:
            out.insert(i, out[i])
        elif op == 2 and len(out) > 1:
            j = min(i + 1, len(out) - 1)
            out[i], out[j] = out[j], out[i]
        elif op == 3 and out:
            out[i] = rnd.choice(vocabulary)
        else:
            out.insert(i, rnd.choice(vocabulary))
    return out


@dataclass
class HaLab:
    """An embedded store in ``dir`` with two services and a group, for ``ha-manager``."""

    dir: Path
    exit_codes: Counter[int] = field(default_factory=Counter)  # of every run_argv

    def __post_init__(self) -> None:
        self.store = self.dir / "ha"
        self.dir.mkdir(parents=True, exist_ok=True)
        for argv in self.setup():
            run_argv(self, argv)

    def setup(self) -> list[list[str]]:
        return [
            ["groupadd", "prod", "--nodes", "node1:2,node2"],
            ["add", "vm:100", "--group", "prod", "--node", "node1"],
            ["add", "ct:101", "--state", "stopped", "--node", "node2"],
        ]

    def seeds(self) -> list[list[str]]:
        return [
            *self.setup(),
            ["add", "vm:102", "--max_restart", "2", "--max_relocate", "0", "--comment", "x"],
            ["set", "vm:100", "--state", "disabled", "--failback", "0"],
            ["set", "ct:101", "--group", "prod", "--node", "node2"],
            ["remove", "vm:102"],
            ["config"],
            ["groupconfig"],
            ["groupset", "prod", "--nodes", "node1,node2:5", "--restricted", "1"],
            ["groupremove", "prod"],
            ["status", "--verbose"],
            ["migrate", "vm:100", "node2"],
            ["relocate", "ct:101", "node1"],
            ["crm-command", "stop", "vm:100", "0"],
            ["crm-command", "node-maintenance", "enable", "node1"],
            ["crm-command", "disarm-ha", "freeze"],
            ["crm-command", "arm-ha"],
        ]

    def vocabulary(self) -> list[str]:
        words = [
            "add", "set", "remove", "config", "groupadd", "groupset", "groupremove",
            "groupconfig", "status", "migrate", "relocate", "crm-command", "stop",
            "node-maintenance", "enable", "disable", "disarm-ha", "arm-ha", "freeze",
            "ignore", "--state", "--group", "--max_restart", "--max_relocate", "--failback",
            "--comment", "--node", "--nodes", "--restricted", "--nofailback", "--verbose",
            "--type", "--store", "--cluster", "vm:100", "ct:101", "vm:999", "fa:1", "100",
            "prod", "node1", "node2", "node9", "started", "stopped", "disabled", "ignored",
            "enabled", "node1:2,node2", "node1:-1", "node1,node1", "etcd://127.0.0.1:1/x",
        ]  # fmt: skip
        return words + list(INTERESTING)


def run_argv(lab: CliLab | HaLab, argv: list[str]) -> list[str]:
    """Run ``hafence ARGV`` (``ha-manager ARGV`` for an HaLab) in-process; what is wrong
    with how it ended (empty: fine)."""
    if isinstance(lab, HaLab):
        command, env = ha_cli, {"HAFENCE_STORE": str(lab.store)}
    else:
        env = {"HAFENCE_STATE_DIR": str(lab.state), "HAFENCE_FENCE_CFG": str(lab.cfg)}
        command = cli
    with contextlib.chdir(lab.dir):  # a relative file name lands in the lab, nowhere else
        result = CliRunner().invoke(command, argv, env=env)
    lab.exit_codes[result.exit_code] += 1
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    problems = []
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        kind = type(result.exception).__name__
        problems.append(f"traceback: {kind}: {str(result.exception)[:200]}")
    if "Traceback" in output:
        problems.append("traceback in the output")
    if "internal error" in output:
        problems.append(f"internal error: {_last_line(output)}")
    if result.exit_code not in ALLOWED_EXIT:
        problems.append(f"exit code {result.exit_code}")
    if result.exit_code == 2 and not output.strip():
        problems.append("exit 2 without a message")
    return problems


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""
