"""A node's daemon, as far as its leases go, in a process of its own (its own incarnation).

``python -m tests.daemons.node_leases STORE NODE [--alive TTL] [--agent TTL]
[--manager TTL] [--renew SECONDS]`` takes the node's membership lease, agent lock and/or
manager lock, prints ``held``, and then exits (the node dies: its leases run out), or
with ``--renew`` keeps renewing them every SECONDS until it is killed (the node lives).
"""

from __future__ import annotations

import argparse
import sys
import time

from hafence.store import open_store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("node")
    ap.add_argument("--alive", type=float)
    ap.add_argument("--agent", type=float)
    ap.add_argument("--manager", type=float)
    ap.add_argument("--renew", type=float)
    a = ap.parse_args()
    leases = {
        f"ha_node_{a.node}_alive": a.alive,
        f"ha_agent_{a.node}_lock": a.agent,
        "ha_manager_lock": a.manager,
    }
    store = open_store(a.store)
    try:
        while True:
            for name, ttl in leases.items():
                if ttl is not None and not store.acquire_lease(name, a.node, ttl, keep=False):
                    print(f"refused {name}", flush=True)
                    sys.exit(1)
            print("held", flush=True)
            if a.renew is None:
                return
            time.sleep(a.renew)
    finally:
        store.close()


if __name__ == "__main__":
    main()
