"""A real Redfish service on loopback: sushy-tools' emulator with controllable power.

``sushy-emulator`` (PyPI ``sushy-tools``) is the Redfish service OpenStack Ironic
tests against: the full ``/redfish/v1`` tree, ``ComputerSystem.Reset`` with its
allowable values, HTTP basic auth (bcrypt htpasswd file), optional TLS. Its ``--fake``
backend needs no libvirt or cloud, but applies power changes 1-11 s late at random
and keeps state where a test cannot reach it. This runner starts the emulator in a
subprocess (``python -m tests.peers.redfish WORKDIR``) with the fake
backend swapped for one that keeps each system's power in ``WORKDIR/power.json``
and logs every reset to ``WORKDIR/calls.log``, the way the ipmi_sim runner keeps
its chassis in a file: power changes apply after ``power_delay`` seconds (default
at once), ``stuck`` makes ForceOff accepted and ignored. Everything else, HTTP,
routing, auth, JSON, is the emulator's own code.

sushy-tools has no SessionService, so the runner puts a small one in front of the
emulator's basic auth (``sessions=False`` leaves it out): POST
``/redfish/v1/SessionService/Sessions`` checks the same htpasswd file and returns an
``X-Auth-Token``; DELETE logs out; tests see the live sessions. ::

    from tests.peers.redfish import RedfishEmulator

    with RedfishEmulator(systems=("node1", "node2"), tls=True) as bmc:
        bmc.url                        # https://127.0.0.1:PORT
        bmc.system_id("node1")         # the Redfish Id (a UUID derived from the name)
        bmc.power("node1")             # "on" / "off", read from the state file
        bmc.set_power(False, "node1")  # flip the simulated power directly
        bmc.set_stuck(True)            # ForceOff accepted, power stays on
        bmc.calls()                    # ["ForceOff node1", "On node1", ...]
        bmc.sessions()                 # ids of the Redfish sessions logged in now
        bmc.expire_sessions()          # forget them all (a BMC reset)
        bmc.ca_file                    # the self-signed certificate (tls=True)
        bmc.driver_options("node1")    # options for hafence's ``redfish`` driver
        bmc.wrong_password_options()
        bmc.fence_cfg_args("node1")
        bmc.agent_options("node1")     # for ClusterLabs fence_redfish (tls=True)

The port is picked free (bind to port 0) and the start retried if another process
takes it first; :meth:`start` returns once this runner's own process answers. :meth:`stop`
kills the process group and is safe to call twice.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from hafence.simdevices.procs import stop_group

__all__ = ["RedfishEmulator", "RedfishEmulatorError", "available"]

_NS = uuid.UUID("6c1b8a86-35f5-4a43-9c55-8e3c0a6f0b11")


class RedfishEmulatorError(RuntimeError):
    """The emulator could not be started."""


def available() -> bool:
    """Whether sushy-tools (and bcrypt for its auth file) can be imported."""
    try:
        import bcrypt  # noqa: F401
        import sushy_tools.emulator.main  # noqa: F401
    except Exception:
        return False
    return True


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedfishEmulator:
    """One sushy-emulator process serving ``systems`` (see module doc)."""

    def __init__(
        self,
        *,
        systems: tuple[str, ...] = ("node1",),
        username: str = "admin",
        password: str = "hafence-Pw1",
        power_on: bool = True,
        stuck: bool = False,
        power_delay: float = 0.0,
        tls: bool = False,
        sessions: bool = True,
        workdir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if not systems:
            raise ValueError("at least one system")
        if ":" in username:
            raise ValueError("user names cannot contain ':'")
        self.systems = tuple(systems)
        self.username = username
        self.password = password
        self.tls = tls
        self.with_sessions = sessions
        self.host = "127.0.0.1"
        self.port = 0
        self.startup_timeout = startup_timeout
        self._initial_power = power_on
        self._initial_stuck = stuck
        self._power_delay = power_delay
        self._own_dir = workdir is None
        self._workdir = Path(workdir) if workdir is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._nonce = uuid.uuid4().hex

    # -- paths and addresses ---------------------------------------------------------
    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise RedfishEmulatorError("not started")
        return self._workdir

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def ca_file(self) -> str:
        """The emulator's self-signed certificate (its own CA), with ``tls=True``."""
        return str(self.workdir / "cert.pem")

    def system_id(self, name: str | None = None) -> str:
        """The Redfish Id of system ``name`` (default: the first)."""
        return str(uuid.uuid5(_NS, name or self.systems[0]))

    def _ids(self) -> dict[str, str]:
        return {self.system_id(n): n for n in self.systems}

    def _resolve(self, system: str | None) -> str:
        if system is None:
            return self.system_id()
        if system in self._ids():
            return system
        if system in self.systems:
            return self.system_id(system)
        raise KeyError(f"no system {system!r}")

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> RedfishEmulator:
        if self._proc is not None:
            return self
        if not available():
            raise RedfishEmulatorError("sushy-tools (and bcrypt) are not installed")
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="hafence-redfish-"))
        self._workdir.mkdir(parents=True, exist_ok=True)
        self._write_files()
        last = ""
        for _ in range(5):  # another process may grab the free port before we bind it
            self.port = _free_tcp_port()
            last = self._spawn()
            if not last:
                return self
        self.stop()
        raise RedfishEmulatorError(f"sushy-emulator did not start: {last}")

    def _write_files(self) -> None:
        import bcrypt

        d = self.workdir
        # Cost 4: the emulator checks the hash on every request; 12 would cost 0.25 s each.
        digest = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (d / "htpasswd").write_text(f"{self.username}:{digest}\n")
        state = {
            sid: {"name": name, "power": "On" if self._initial_power else "Off"}
            for sid, name in self._ids().items()
        }
        _write_json(d / "power.json", state)
        self.set_stuck(self._initial_stuck)
        (d / "calls.log").write_text("")
        conf = {
            "systems": [{"uuid": sid, "name": n} for sid, n in self._ids().items()],
            "auth_file": str(d / "htpasswd"),
            "power_delay": self._power_delay,
            "sessions": self.with_sessions,
            "nonce": self._nonce,
        }
        if self.tls:
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                 "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                check=True, capture_output=True,
            )  # fmt: skip
            conf.update(cert=str(d / "cert.pem"), key=str(d / "key.pem"))
        _write_json(d / "emulator.json", conf)

    def _spawn(self) -> str:
        """Start the process; '' once it answers, else why it did not."""
        log = open(self.workdir / "emulator.log", "ab")  # the child writes to it
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tests.peers.redfish", str(self.workdir),
                 str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        finally:
            log.close()
        ctx = ssl._create_unverified_context() if self.tls else None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                tail = (self.workdir / "emulator.log").read_text(errors="replace")[-400:]
                return f"exited: {tail.strip()}"
            try:
                url = f"{self.url}/hafence-peer"
                with urllib.request.urlopen(url, timeout=1, context=ctx) as answer:
                    if json.loads(answer.read()).get("nonce") == self._nonce:
                        return ""
                    self._kill()  # another process owns the port: try another one
                    return f"port {self.port} taken by another server"
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        self._kill()
        return f"no answer on {self.url} within {self.startup_timeout:g}s"

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_group(proc, grace=5.0, kill_wait=None)

    def stop(self) -> None:
        self._kill()
        if self._own_dir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> RedfishEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the "hardware" --------------------------------------------------------------
    def power(self, system: str | None = None) -> str:
        state = _read_json(self.workdir / "power.json")[self._resolve(system)]
        return "on" if _settle(state)["power"] == "On" else "off"

    def set_power(self, on: bool, system: str | None = None) -> None:
        path = self.workdir / "power.json"
        state = _read_json(path)
        state[self._resolve(system)].update(power="On" if on else "Off", pending=None)
        _write_json(path, state)

    def set_stuck(self, stuck: bool = True) -> None:
        flag = self.workdir / "stuck"
        if stuck:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)

    def calls(self) -> list[str]:
        """Every reset request received, as "RESETTYPE system-name", oldest first."""
        return (self.workdir / "calls.log").read_text().splitlines()

    def clear_calls(self) -> None:
        (self.workdir / "calls.log").write_text("")

    def sessions(self) -> list[str]:
        """Ids of the Redfish sessions currently logged in."""
        if not self.with_sessions:
            return []
        return list(_read_json(self.workdir / "sessions.json")["live"])

    def sessions_created(self) -> int:
        if not self.with_sessions:
            return 0
        return int(_read_json(self.workdir / "sessions.json")["created"])

    def expire_sessions(self) -> None:
        """Forget every session (as a BMC reset or session time-out does)."""
        (self.workdir / "expire-sessions").touch()

    # -- options for the driver ------------------------------------------------------
    def driver_options(self, system: str | None = None) -> dict[str, str]:
        """Options that drive hafence's ``redfish`` driver against this emulator."""
        opts = {
            "ip": self.host,
            "ipport": str(self.port),
            "ssl": "1" if self.tls else "0",
            "username": self.username,
            "password": self.password,
        }
        if self.tls:
            opts["ca_file"] = self.ca_file
        if system is not None or len(self.systems) > 1:
            opts["system"] = self._resolve(system)
        return opts

    def wrong_password_options(self, system: str | None = None) -> dict[str, str]:
        return {**self.driver_options(system), "password": f"not-{self.password}"}

    def fence_cfg_args(self, system: str | None = None) -> str:
        return " ".join(f"{k}='{v}'" for k, v in self.driver_options(system).items())

    def agent_options(self, system: str | None = None) -> dict[str, str]:
        """The same for ClusterLabs' ``fence_redfish`` (which speaks HTTPS only)."""
        if not self.tls:
            raise RedfishEmulatorError("fence_redfish needs RedfishEmulator(tls=True)")
        return {
            "ip": self.host,
            "ipport": str(self.port),
            "username": self.username,
            "password": self.password,
            "systems_uri": f"/redfish/v1/Systems/{self._resolve(system)}",
            "ssl_insecure": "1",
        }


# -- state file (shared by the test process and the emulator process) -------------------
def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _write_json(path: Path, data: Any) -> None:
    # a temp file of its own: the emulator serves requests on several threads
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _settle(entry: dict[str, Any]) -> dict[str, Any]:
    """Apply a pending power change whose time has come (power_delay > 0)."""
    pending = entry.get("pending")
    if pending and time.time() >= pending["at"]:
        entry = {**entry, "power": pending["power"], "pending": None}
    return entry


# -- the emulator process ---------------------------------------------------------------
def _serve(workdir: Path, port: int) -> None:  # pragma: no cover - runs in the child
    from sushy_tools import error
    from sushy_tools.emulator import main as emu
    from sushy_tools.emulator.resources.systems import fakedriver

    conf = _read_json(workdir / "emulator.json")
    state_file = workdir / "power.json"
    delay = float(conf["power_delay"])
    state_lock = threading.Lock()

    class FileBackedDriver(fakedriver.FakeDriver):
        """The fake backend, with its power state in power.json (see module doc)."""

        def _entry(self, identity: str) -> tuple[str, dict[str, Any]]:
            uid = self.uuid(identity)
            return uid, _read_json(state_file)[uid]

        def get_power_state(self, identity: str) -> str:
            return _settle(self._entry(identity)[1])["power"]

        def set_power_state(self, identity: str, state: str) -> None:
            with state_lock:  # read-modify-write of power.json; requests run in threads
                self._set_power_state(identity, state)

        def _set_power_state(self, identity: str, state: str) -> None:
            uid, entry = self._entry(identity)
            entry = _settle(entry)
            with open(workdir / "calls.log", "a") as f:
                f.write(f"{state} {entry['name']}\n")
            if state in ("On", "ForceOn", "ForceRestart", "GracefulRestart", "PowerCycle"):
                target = "On"
            elif state in ("ForceOff", "GracefulShutdown"):
                target = entry["power"] if (workdir / "stuck").exists() else "Off"
            elif state == "PushPowerButton":
                target = "Off" if entry["power"] == "On" else "On"
            elif state == "Nmi":
                return
            else:
                raise error.NotSupportedError(f"Power state {state} is not supported")
            if delay > 0:
                entry["pending"] = {"power": target, "at": time.time() + delay}
            else:
                entry.update(power=target, pending=None)
            full = _read_json(state_file)
            full[uid] = entry
            _write_json(state_file, full)

    fakedriver.FakeDriver = FileBackedDriver  # Application.systems looks it up per call
    systems = [
        {"uuid": s["uuid"], "name": s["name"], "power_state": "Off", "external_notifier": False}
        for s in conf["systems"]
    ]
    emu.app.configure(
        extra_config={
            "SUSHY_EMULATOR_FAKE_DRIVER": True,
            "SUSHY_EMULATOR_FAKE_SYSTEMS": systems,
            "SUSHY_EMULATOR_AUTH_FILE": conf["auth_file"],
            "SUSHY_EMULATOR_LISTEN_IP": "127.0.0.1",
            "SUSHY_EMULATOR_LISTEN_PORT": port,
            # The emulator's sqlite caches default to one directory shared by every
            # emulator on the machine (systems of other runs would show up): ours.
            "SUSHY_EMULATOR_STATE_DIR": str(workdir / "state"),
        }
    )
    emu.app.wsgi_app = _SessionService(
        emu.app.wsgi_app, conf["auth_file"], workdir, conf["nonce"], sessions=conf["sessions"]
    )
    ctx = None
    if conf.get("cert"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(conf["cert"], conf["key"])
    # The emulator's own main() also parses argv and installs a SIGCHLD reaper we do
    # not need; run its Flask app the same way it would.
    emu.app.run(host="127.0.0.1", port=port, ssl_context=ctx, threaded=True)


SESSIONS = "/redfish/v1/SessionService/Sessions"


class _SessionService:  # pragma: no cover - runs in the child
    """Redfish sessions in front of the emulator's basic auth (sushy-tools has none).

    POST Sessions with UserName/Password (checked against the same htpasswd file)
    answers 201 with ``X-Auth-Token`` and ``Location``; a request carrying a live
    token skips basic auth; DELETE of the session's URI logs out. Live sessions are
    mirrored to ``sessions.json`` for the test process.
    """

    def __init__(
        self, basic: Any, auth_file: str, workdir: Path, nonce: str, *, sessions: bool
    ) -> None:
        self.nonce = nonce
        self.sessions = sessions
        self.basic = basic  # the emulator's RedfishAuthMiddleware
        self.app = basic.app  # the emulator itself
        self.auth_file = auth_file
        self.file = workdir / "sessions.json"
        self.lock = threading.Lock()
        self.live: dict[str, str] = {}  # token -> session id
        self.created = 0
        self._save()

    def _save(self) -> None:
        data = {"live": sorted(self.live.values()), "created": self.created}
        _write_json(self.file, data)

    def _reply(self, start_response: Any, status: str, body: Any, headers=()) -> list[bytes]:
        data = json.dumps(body).encode()
        start_response(
            status,
            [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers],
        )
        return [data]

    def _root(self, env: dict[str, Any], start_response: Any) -> list[bytes]:
        """The service root, linking the session service as a BMC's does."""
        got: list[Any] = []
        body = b"".join(self.app(env, lambda status, headers, *_: got.append(status)))
        doc = json.loads(body)
        doc["SessionService"] = {"@odata.id": "/redfish/v1/SessionService"}
        doc.setdefault("Links", {})["Sessions"] = {"@odata.id": SESSIONS}
        return self._reply(start_response, got[0], doc)

    def _unauthorized(self, start_response: Any, message: str) -> list[bytes]:
        body = {"error": {"code": "Base.1.0.GeneralError", "message": message}}
        return self._reply(start_response, "401 Unauthorized", body)

    def __call__(self, env: dict[str, Any], start_response: Any) -> Any:
        from sushy_tools import error
        from sushy_tools.emulator import auth_basic

        path = env.get("PATH_INFO", "").rstrip("/")
        method = env.get("REQUEST_METHOD", "GET")
        if self.file.with_name("expire-sessions").exists():  # a BMC reset forgets them
            self.file.with_name("expire-sessions").unlink(missing_ok=True)
            with self.lock:
                self.live.clear()
                self._save()
        if path == "/hafence-peer":  # lets the runner tell its own process from a squatter
            return self._reply(start_response, "200 OK", {"nonce": self.nonce})
        if not self.sessions:
            return self.basic(env, start_response)
        if path == SESSIONS and method == "POST":
            size = int(env.get("CONTENT_LENGTH") or 0)
            try:
                creds = json.loads(env["wsgi.input"].read(size) or b"{}")
                auth_basic.authenticate(
                    self.auth_file, str(creds["UserName"]), str(creds["Password"]).encode()
                )
            except (ValueError, KeyError, error.FishyError):
                return self._unauthorized(start_response, "Incorrect username or password")
            token, sid = uuid.uuid4().hex, uuid.uuid4().hex[:12]
            with self.lock:
                self.live[token] = sid
                self.created += 1
                self._save()
            where = f"{SESSIONS}/{sid}"
            body = {"@odata.id": where, "Id": sid, "UserName": creds["UserName"]}
            headers = [("X-Auth-Token", token), ("Location", where)]
            return self._reply(start_response, "201 Created", body, headers)
        if path == "/redfish/v1" and method == "GET":
            return self._root(env, start_response)
        auth_token = env.get("HTTP_X_AUTH_TOKEN")
        if auth_token is None:
            return self.basic(env, start_response)
        with self.lock:
            live = self.live.get(auth_token)
        if live is None:
            return self._unauthorized(start_response, "No such session")
        if method == "DELETE" and path == f"{SESSIONS}/{live}":
            with self.lock:
                self.live.pop(auth_token, None)
                self._save()
            start_response("204 No Content", [])
            return [b""]
        return self.app(env, start_response)


if __name__ == "__main__":  # pragma: no cover
    _serve(Path(sys.argv[1]), int(sys.argv[2]))
