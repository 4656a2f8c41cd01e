"""The store's time budget per daemon round, derived from the daemon timings.

Let ``I`` be the interval, ``N`` the membership lease (``node_timeout``), ``W`` the
watchdog timeout and ``B`` the budget: every store call of a round ends (or fails) by the
round's start + ``B``. A round starts at ``s_k``; the next one starts at
``s_(k+1) <= s_k + max(I, B)`` (a round ends with its last store call; waking early on a
store change only shortens the gap). In each round the daemon first renews its
membership lease and then its lock, and feeds the watchdog right after the lock, all
within ``[s_k, s_k + B]``. So two renewals (and two feeds) are at most
``max(I, B) + B`` apart, and a healthy node keeps every rule when

- ``max(I, B) + B < N``: its membership never lapses (the master never sees it offline);
- ``max(I, B) + B < W``: its watchdog never fires;
- ``W < lease_ttl`` (checked with the timings): a node cut off resets before its lock
  can expire and pass to another node; the budget does not touch that rule, since a lock
  is renewed before the feed of the same round.

:func:`round_budget` takes ``B = min(I, (N - I) / 2, (W - I) / 2)``: with ``B <= I`` the
gap is ``I + B``, which leaves half of ``N - I`` (and of ``W - I``) as margin for etcd's
whole-second lease TTLs, clock steps and a slow CPU. Proxmox's defaults (``I`` 10 s,
``N`` 30 s, ``W`` 60 s) give ``B`` = 10 s: gaps of at most 20 s against 30 s and 60 s.

Inside that budget each try on one etcd endpoint gets at most its share of what is left
(:class:`hafence.store.etcd_client.EtcdClient`), so a hung member costs one share, once
(the client then sticks to the member that answered), never the whole round.
"""

from __future__ import annotations


def round_budget(interval: float, node_timeout: float, watchdog_timeout: float) -> float:
    """Seconds a daemon round may spend on store calls (see the module docstring)."""
    budget = min(interval, (node_timeout - interval) / 2, (watchdog_timeout - interval) / 2)
    if budget <= 0:
        raise ValueError(
            "node-timeout and watchdog-timeout must both exceed the interval (the store "
            "needs time in every round)"
        )
    return budget


def keep_alive_span(interval: float, budget: float) -> float:
    """How long after a round's start a background keep-alive may renew its leases: until
    the next round should have renewed them itself (``interval + budget``)."""
    return interval + budget
