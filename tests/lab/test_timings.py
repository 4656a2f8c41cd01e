"""Every lab preset is accepted by the daemons' own timing rules, with the lab's mux."""

from __future__ import annotations

import pytest

from hafence import daemons
from hafence.lab.timings import PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("cmd", [daemons.crm_cli, daemons.lrm_cli], ids=["crm", "lrm"])
def test_the_daemons_accept_the_lab_timings(name: str, cmd, tmp_path) -> None:
    lab = PRESETS[name]
    # a missing mux config: the daemons fall back to their default hardware timeout
    # unless the lab names its own, which is what the lab's nodes run with
    args = [*lab.daemon_args(), "--watchdog-config", str(tmp_path / "none"), "--no-watchdog"]
    ctx = cmd.make_context(cmd.name, args)
    t = daemons._timings("lrm", ctx.params)
    assert t.hw_timeout == lab.mux_timeout
    assert t.lease_ttl == lab.lease_ttl and t.store_latency == lab.store_deadline
    assert t.self_fence_time < lab.lease_ttl
