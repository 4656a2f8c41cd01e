"""The chain reaches ClusterLabs agents only through the declared ``firstresult`` hook
``hafence_fence_agent_driver``: no plugin is named by the core, the first plugin that
answers wins, a broken one is reported and skipped."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from hafence.errors import UnknownDriverError
from hafence.fence import driver_class
from hafence.fence.driver import FenceDriver, PowerState
from hafence.hookspecs import hookimpl
from hafence.plugins import PluginRegistry


class FakeAgent(FenceDriver):
    name: ClassVar[str] = "fence_fake"
    description: ClassVar[str] = "an agent answered by a test plugin"

    async def status(self) -> PowerState:
        return PowerState.ON

    async def off(self) -> None: ...

    async def on(self) -> None: ...


class Answers:
    def __init__(self, result: Any = FakeAgent) -> None:
        self.result, self.asked = result, []

    @hookimpl
    def hafence_fence_agent_driver(self, agent: str) -> Any:
        self.asked.append(agent)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result if agent == "fence_fake" else None


def registry(*plugins: object) -> PluginRegistry:
    reg = PluginRegistry(load_entry_points=False)
    for n, plugin in enumerate(plugins):
        reg.register(plugin, f"p{n}")
    return reg


def test_an_agent_comes_from_the_plugin_that_answers() -> None:
    silent, answering = Answers(None), Answers()
    assert driver_class("fence_fake", registry(answering, silent)) is FakeAgent
    assert silent.asked == ["fence_fake"]  # the last registered is asked first (pluggy)


def test_without_an_answer_the_name_is_unknown() -> None:
    with pytest.raises(UnknownDriverError, match="fence_fake"):
        driver_class("fence_fake", registry(Answers(None)))
    with pytest.raises(UnknownDriverError):
        driver_class("fence_fake", registry())  # no plugin implements the hook
    asked = Answers()
    with pytest.raises(UnknownDriverError):
        driver_class("notfence_x", registry(asked))  # only fence_* names go to agents
    assert asked.asked == []


def test_a_broken_answer_is_reported_and_skipped() -> None:
    reg = registry(Answers(), Answers(RuntimeError("boom")))
    assert driver_class("fence_fake", reg) is FakeAgent
    assert any("hafence_fence_agent_driver('fence_fake') raised" in str(e) for e in reg.errors)
    reg = registry(Answers(object))  # not a FenceDriver
    with pytest.raises(UnknownDriverError):
        driver_class("fence_fake", reg)
    assert any("is not a FenceDriver subclass" in str(e) for e in reg.errors)


def test_not_installed_is_said_by_the_answering_plugin() -> None:
    reg = registry(Answers(UnknownDriverError("fence", "fence_fake", ["installed agents"])))
    with pytest.raises(UnknownDriverError, match="installed agents"):
        driver_class("fence_fake", reg)


def test_the_fence_agent_plugin_declares_the_hook_in_its_manifest() -> None:
    reg = PluginRegistry()
    assert reg._hooks.get("hafence_fence_agent_driver") == {"fence_agent"}
    cls = driver_class("fence_ipmilan", reg)  # an installed agent (fence-agents)
    assert cls.name == "fence_ipmilan" and not reg.errors
