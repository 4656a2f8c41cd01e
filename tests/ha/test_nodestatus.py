"""Node states as the master sees them: online, unknown, fence, maintenance, gone."""

from __future__ import annotations

from hafence.ha.nodestatus import GONE_DELAY, NodeStatus
from hafence.sim.env import SimEnv
from hafence.sim.hardware import Hardware


def make() -> tuple[NodeStatus, SimEnv, Hardware]:
    hw = Hardware(status={n: {"power": "on", "network": "on"} for n in ("node1", "node2")})
    env = SimEnv(hw, "node1", "crm")
    return NodeStatus(env, {}), env, hw


def test_online_unknown_and_back() -> None:
    ns, env, _ = make()
    ns.update({"node1": {"online": True}, "node2": {"online": True}}, {})
    assert ns.status == {"node1": "online", "node2": "online"}
    env.cur_time = 10
    ns.update({"node1": {"online": True}, "node2": {"online": False}}, {})
    assert ns.get("node2") == "unknown" and not ns.is_online("node2")
    env.cur_time = 59
    assert not ns.offline_delayed("node2")
    env.cur_time = 60
    assert ns.offline_delayed("node2")  # 60 s after it was last seen online (t=0)
    ns.update({"node1": {"online": True}, "node2": {"online": True}}, {})
    assert ns.get("node2") == "online"


def test_maintenance_follows_the_lrm_mode() -> None:
    ns, _, _ = make()
    online = {"node1": {"online": True}, "node2": {"online": True}}
    ns.update(online, {})
    ns.update(online, {"node2": "maintenance"})
    assert ns.get("node2") == "maintenance" and ns.is_operational("node2")
    ns.update(online, {"node2": "active"})
    assert ns.get("node2") == "online"


def test_removed_node_goes_gone_then_is_forgotten() -> None:
    ns, env, _ = make()
    ns.update({"node1": {"online": True}, "node2": {"online": True}}, {})
    env.cur_time = 10
    ns.update({"node1": {"online": True}}, {})  # node2 left the cluster
    assert ns.get("node2") == "unknown"
    ns.update({"node1": {"online": True}}, {})
    assert ns.get("node2") == "gone"
    env.cur_time = 10 + GONE_DELAY
    ns.update({"node1": {"online": True}}, {})
    assert "node2" not in ns.status


def test_a_fenced_node_stays_fenced_until_acknowledged() -> None:
    ns, env, hw = make()
    ns.update({"node1": {"online": True}, "node2": {"online": True}}, {})
    # node2 still holds its agent lock: fencing cannot complete
    hw.cluster_locks["ha_agent_node2_lock"] = {"node": "node2", "time": 0}
    assert not ns.fence_node("node2")
    assert ns.get("node2") == "fence"
    ns.update({"node1": {"online": True}, "node2": {"online": True}}, {})
    assert ns.get("node2") == "fence"  # coming back online does not end a fence
    env.cur_time = 121  # the lock expired: node2's watchdog has reset it
    assert ns.fence_node("node2")
    assert ns.get("node2") == "unknown"
