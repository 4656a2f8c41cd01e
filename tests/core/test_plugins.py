"""Plugin loading: entry points, broken plugins isolated and named."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
from pathlib import Path

import pytest

from hafence.errors import UnknownDriverError
from hafence.fence.driver import FenceDriver, PowerState
from hafence.hookspecs import hookimpl
from hafence.plugins import PluginRegistry


class Good(FenceDriver):
    name = "good"

    async def status(self) -> PowerState:
        return PowerState.OFF

    async def off(self) -> None: ...

    async def on(self) -> None: ...


class GoodPlugin:
    @hookimpl
    def hafence_fence_drivers(self):
        return [Good]


class RaisingPlugin:
    @hookimpl
    def hafence_fence_drivers(self):
        raise RuntimeError("boom")


class BadReturnPlugin:
    @hookimpl
    def hafence_fence_drivers(self):
        return [object]


def test_broken_hooks_are_isolated_and_named() -> None:
    reg = PluginRegistry(load_entry_points=False)
    reg.register(RaisingPlugin(), "raiser")
    reg.register(GoodPlugin(), "good")
    reg.register(BadReturnPlugin(), "badret")
    assert reg.fence_drivers() == {"good": Good}
    assert reg.owner("hafence_fence_drivers", "good") == "good"
    msgs = [str(e) for e in reg.errors]
    assert any("plugin 'raiser'" in m and "boom" in m for m in msgs)
    assert any("plugin 'badret'" in m and "not a FenceDriver" in m for m in msgs)
    with pytest.raises(UnknownDriverError, match="available: good"):
        reg.fence_driver("nope")


def test_duplicate_driver_name_is_an_error() -> None:
    reg = PluginRegistry(load_entry_points=False)
    reg.register(GoodPlugin(), "first")
    reg.register(GoodPlugin(), "second")
    # The same class from two plugins is harmless; a different class under one name is not.

    class Other(Good):
        pass

    class OtherPlugin:
        @hookimpl
        def hafence_fence_drivers(self):
            return [Other]

    reg.register(OtherPlugin(), "third")
    assert reg.fence_drivers()["good"] is Good
    assert any("already provided by 'first'" in str(e) for e in reg.errors)


def test_broken_entry_point_does_not_stop_others(tmp_path: Path, monkeypatch) -> None:
    """A real distribution on sys.path with one importable and one broken entry point."""
    site = tmp_path / "site"
    (site / "fake_good").mkdir(parents=True)
    (site / "fake_good" / "__init__.py").write_text(
        textwrap.dedent("""
        from hafence.hookspecs import hookimpl
        from hafence.fence.driver import FenceDriver, PowerState

        class FakeDriver(FenceDriver):
            name = "fake"
            async def status(self): return PowerState.ON
            async def off(self): pass
            async def on(self): pass

        @hookimpl
        def hafence_fence_drivers():
            return [FakeDriver]
    """)
    )
    dist = site / "fakevendor-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakevendor\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[hafence]\nfakegood = fake_good\nfakebroken = fake_missing_module\n"
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    reg = PluginRegistry()
    assert "fake" in reg.fence_drivers()
    assert reg.plugins["fakebroken"].error
    assert any(
        "plugin 'fakebroken'" in str(e) and "fake_missing_module" in str(e) for e in reg.errors
    )
    assert reg.plugins["fakegood"].source == "fakevendor 1.0"
    sys.modules.pop("fake_good", None)
