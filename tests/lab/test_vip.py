"""A service address (resource-agents' IPaddr2 as ``ocf:vip``) follows its node's failure:
after the node crashes and is fenced, the address answers from another node, and at no
time do two nodes hold it. The TCP service behind it (every node's ``web`` server) is
answered by the address' holder: a client sees the old node, then the new one."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

from hafence.lab.checker import running_copies
from hafence.lab.control import Lab
from hafence.lab.inbox import mails, metrics_url, webhooks
from hafence.lab.layout import VIP_SERVICE
from hafence.lab.network import netns_supported
from hafence.lab.web import Client

AGENT = "/usr/lib/ocf/resource.d/heartbeat/IPaddr2"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    why = netns_supported()
    if why:
        pytest.skip(f"hafence lab needs network namespaces: {why}")
    if not shutil.which(AGENT):
        pytest.skip("resource-agents' IPaddr2 is not installed (bash scripts/install.sh)")
    lab = Lab(tmp_path_factory.mktemp("vip-lab"))
    try:
        lab.up(3, "fast", services=[VIP_SERVICE, "writer:w1"])
        yield lab
    finally:
        lab.down()


def holders(lab: Lab) -> list[str]:
    return running_copies(lab.layout).get(VIP_SERVICE, [])


def mac_of(lab: Lab, node: str) -> str:
    ns = lab.layout.netns(node)
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", "eth0"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return json.loads(out)[0]["address"]


def answers_from(lab: Lab) -> str | None:
    """Knock on a closed TCP port of the address from the host (a reset is an answer);
    the node whose MAC answered the ARP for it."""
    vip = lab.layout.vip_addr
    subprocess.run(["ip", "neigh", "flush", "to", vip], check=False)
    try:
        socket.create_connection((vip, 9), timeout=2).close()
    except ConnectionRefusedError:
        pass  # answered
    except OSError:
        return None
    out = subprocess.run(["ip", "-j", "neigh", "show", "to", vip], capture_output=True,
                         text=True).stdout  # fmt: skip
    macs = {n.get("lladdr") for n in json.loads(out or "[]")}
    return next((node for node in lab.layout.nodes if mac_of(lab, node) in macs), None)


def test_the_service_address_moves_with_a_failed_node(lab: Lab) -> None:
    (victim,) = holders(lab)
    assert answers_from(lab) == victim
    # as long as the stated recovery bound: the address must come back elsewhere
    deadline = time.monotonic() + lab.timings.recovery_bound()
    with Client(lab.layout.vip_addr) as client:
        while not any(a.node == victim for a in client.snapshot()):
            assert time.monotonic() < deadline, client.snapshot()[-3:]
            time.sleep(0.05)
        killed = time.time()
        lab.fault(victim, "kill")
        seen: list[list[str]] = []
        while time.monotonic() < deadline:
            now = holders(lab)
            seen.append(now)
            assert len(now) <= 1, f"{VIP_SERVICE} on {now}"
            if now and now != [victim] and client.outage(killed, victim) is not None:
                break
            time.sleep(0.2)
    (new,) = holders(lab)
    assert new != victim, seen
    assert answers_from(lab) == new
    # the TCP service: the old node until the kill, then nothing, then only the new one
    answered = [a.node for a in client.snapshot() if a.node is not None]
    switch = answered.index(new)
    assert set(answered[:switch]) == {victim} and set(answered[switch:]) == {new}, answered
    outage = client.outage(killed, victim)
    assert outage is not None and 0 < outage < lab.timings.recovery_bound(), answered[-5:]
    lab.heal([victim])
    lab.wait_ready(lab.timings.settle_bound())
    assert holders(lab) == [new]  # the healed node took nothing back (nofailback or not)
    assert answers_from(lab) == new
    operator_sees_one_notice_and_the_fence_in_metrics(lab, victim)


def test_a_killed_web_daemon_comes_back_on_its_node_and_moves_nothing(lab: Lab) -> None:
    (holder,) = holders(lab)
    pid = lab.status()["nodes"][holder]["daemons"]["web"]
    assert pid is not None
    lab.fault(holder, "kill-daemon", daemon="web")
    deadline = time.monotonic() + lab.timings.recovery_bound()
    while lab.status()["nodes"][holder]["daemons"]["web"] in (None, pid):
        assert time.monotonic() < deadline, "the web daemon was not started again"
        time.sleep(0.1)
    with Client(lab.layout.vip_addr) as client:  # the new one answers on the address
        while not any(a.node == holder for a in client.snapshot()):
            assert time.monotonic() < deadline, client.snapshot()[-3:]
            time.sleep(0.05)
    assert holders(lab) == [holder]  # a test service's crash is no node failure


def operator_sees_one_notice_and_the_fence_in_metrics(lab: Lab, victim: str) -> None:
    """The fence episode reached the operator once by mail and once by webhook, and the
    master's metrics show the fence and how long its device took."""
    subject = f"hafence: node '{victim}' fenced"
    about = [m for m in mails(lab.layout) if m["Subject"] == subject]
    assert len(about) == 1, [m["Subject"] for m in mails(lab.layout)]
    assert VIP_SERVICE in about[0].get_payload()
    hooks = [h for h in webhooks(lab.layout) if h.get("subject") == subject]
    assert len(hooks) == 1, [h.get("subject") for h in webhooks(lab.layout)]
    assert hooks[0]["node"] == victim
    assert not any("secret" in m.as_string().lower() for m in mails(lab.layout))
    master = lab.cluster()["master"]
    text = urllib.request.urlopen(metrics_url(lab.layout, master), timeout=10).read().decode()
    fenced = re.search(rf'hafence_fences_total{{[^}}]*target="{victim}"[^}}]*}} (\S+)', text)
    assert fenced and float(fenced.group(1)) >= 1, text[-2000:]
    took = re.search(
        rf'hafence_fence_duration_seconds_sum{{[^}}]*target="{victim}"[^}}]*}} (\S+)', text
    )
    assert took and float(took.group(1)) > 0, text[-2000:]
