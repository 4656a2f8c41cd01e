"""Plugin loading: entry points, broken plugins isolated and named."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from hafence.errors import UnknownDriverError
from hafence.fence.driver import FenceDriver, PowerState
from hafence.hookspecs import hookimpl
from hafence.plugins import PluginRegistry

DRIVER_MODULE = """
from hafence.hookspecs import hookimpl
from hafence.fence.driver import FenceDriver, PowerState

class Driver(FenceDriver):
    name = {name!r}
    async def status(self): return PowerState.ON
    async def off(self): pass
    async def on(self): pass

@hookimpl
def hafence_fence_drivers():
    return [Driver]
"""


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
    (site / "fake_good" / "__init__.py").write_text(DRIVER_MODULE.format(name="fake"))
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


# -- lazy loading ------------------------------------------------------------------------


@pytest.fixture
def lazy_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """'lazyvendor 1.0': plugins lazy_a and lazy_b with a manifest, lazy_c without one,
    lazy_broken declared but not importable. Yields the plugins' module names."""
    site = tmp_path / "site"
    site.mkdir()
    modules = {"lazy_a": "drv_a", "lazy_b": "drv_b", "lazy_c": "drv_c"}
    for module, driver in modules.items():
        (site / f"{module}.py").write_text(DRIVER_MODULE.format(name=driver))
    dist = site / "lazyvendor-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lazyvendor\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[hafence]\na = lazy_a\nb = lazy_b\nc = lazy_c\nbroken = lazy_missing\n"
        "[hafence.fence_drivers]\ndrv_a = lazy_a\ndrv_b = lazy_b\ndrv_gone = lazy_missing\n"
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield [*modules, "lazy_missing"]
    for module in modules:
        sys.modules.pop(module, None)


def loaded(modules: list[str]) -> set[str]:
    return {m for m in modules if m in sys.modules}


def test_reading_entry_points_imports_no_plugin(lazy_site: list[str]) -> None:
    reg = PluginRegistry()
    assert loaded(lazy_site) == set()
    assert {"a", "b", "c", "broken"} <= set(reg.plugins)
    assert reg.plugins["a"].source == "lazyvendor 1.0" and reg.plugins["a"].module == "lazy_a"
    assert reg.errors == []


def test_a_declared_driver_imports_only_its_plugin(lazy_site: list[str]) -> None:
    reg = PluginRegistry()
    assert reg.fence_driver("drv_b").name == "drv_b"
    assert loaded(lazy_site) == {"lazy_b"}
    assert reg.owner("hafence_fence_drivers", "drv_b") == "b"


def test_an_undeclared_name_imports_only_plugins_without_a_manifest(
    lazy_site: list[str],
) -> None:
    reg = PluginRegistry()
    assert reg.fence_driver("drv_c").name == "drv_c"
    assert loaded(lazy_site) == {"lazy_c"}
    with pytest.raises(UnknownDriverError) as err:
        reg.fence_driver("nope")
    # every usable name is offered, without importing the declaring plugins for it
    offered = str(err.value).split("available: ")[1].rstrip(")").split(", ")
    assert {"drv_a", "drv_b", "drv_c", "drv_gone"} <= set(offered)
    assert loaded(lazy_site) == {"lazy_c"}


def test_a_broken_declared_plugin_is_named_when_used(lazy_site: list[str]) -> None:
    reg = PluginRegistry()
    with pytest.raises(UnknownDriverError, match="unknown fence driver 'drv_gone'") as err:
        reg.fence_driver("drv_gone")
    assert "drv_gone" not in str(err.value).split("available: ")[1]
    assert any("plugin 'broken'" in str(e) and "lazy_missing" in str(e) for e in reg.errors), (
        reg.errors
    )
    assert reg.plugins["broken"].error
    assert loaded(lazy_site) == {"lazy_c"}  # and the plugins without a manifest


def test_listing_all_drivers_loads_every_plugin_and_names_the_broken_one(
    lazy_site: list[str],
) -> None:
    reg = PluginRegistry()
    drivers = reg.fence_drivers()
    assert {"drv_a", "drv_b", "drv_c"} <= set(drivers)
    assert loaded(lazy_site) == {"lazy_a", "lazy_b", "lazy_c"}
    assert [e.plugin for e in reg.errors if "lazy_missing" in str(e)] == ["broken"]


def test_a_manifest_naming_no_plugin_is_an_error(tmp_path: Path, monkeypatch) -> None:
    site = tmp_path / "site"
    dist = site / "typo-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: typo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hafence.fence_drivers]\nx = typo_modul\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    reg = PluginRegistry()
    assert any(
        "hafence.fence_drivers declares fence driver 'x'" in str(e) and "typo_modul" in str(e)
        for e in reg.errors
    )


def test_using_a_first_party_driver_imports_only_its_plugin() -> None:
    # In a fresh interpreter: what `hafence device status --driver ipmi` resolves.
    code = (
        "import sys\n"
        "from hafence.fence.chain import driver_class\n"
        "driver_class('ipmi')\n"
        "driver_class('fence_ipmilan')\n"
        "print(' '.join(sorted(m for m in sys.modules if '.' not in m)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert {"hafence_ipmi", "hafence_fence_agent"} <= set(out)
    for other in ("hafence_snmp", "pysnmp", "hafence_redfish", "sushy", "hafence_serial",
                  "serial", "hafence_watchdogs", "hafence_resources"):  # fmt: skip
        assert other not in out


def test_entry_point_index_reads_what_importlib_metadata_reads(lazy_site: list[str]) -> None:
    """hafence.plugins_index stands in for importlib.metadata (which costs a one-shot
    command more than its IPMI work): it must find the same hafence entry points, the
    first distribution of a name on sys.path winning, and name the same distribution."""
    from hafence.plugins_index import entry_points

    eps = importlib.metadata.entry_points()
    want = sorted(
        (g, ep.name, ep.value)
        for g in eps.groups
        if g == "hafence" or g.startswith("hafence.")
        for ep in eps.select(group=g)
    )
    got = entry_points()
    assert sorted((ep.group, ep.name, ep.value) for ep in got) == want
    assert {"hafence.fence_drivers", "hafence"} <= {ep.group for ep in got}
    lazy = next(ep for ep in got if ep.module == "lazy_a")
    assert (lazy.dist.name, lazy.dist.version) == ("lazyvendor", "1.0")
