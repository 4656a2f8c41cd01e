"""Config files as the daemons read them (hafence.ha.cfgfiles): damage never stops HA."""

from __future__ import annotations

from typing import Any

from hafence.ha.cfgfiles import ConfigFiles
from hafence.store import Store

GOOD = "dummy: a\n\tnode node1\n\tstate started\n\ndummy: b\n\tnode node2\n\tstate started\n"


class Log(list):
    def __call__(self, level: str, msg: str) -> None:
        self.append((level, msg))

    def text(self) -> str:
        return "\n".join(m for _, m in self)


def _files(store: Store) -> tuple[ConfigFiles, Log]:
    log = Log()
    return ConfigFiles(store, log), log


def test_a_byte_that_is_not_utf8_in_a_comment_is_read_anyway(store: Store) -> None:
    cfg, log = _files(store)
    store.write_text("resources.cfg", GOOD)
    store._put("resources.cfg", b"# caf\xe9\n" + GOOD.encode())
    assert set(cfg.resources()) == {"dummy:a", "dummy:b"}
    assert "byte 5 is not UTF-8, read as U+FFFD" in log.text()
    store._put("rules.cfg", b"# r\xe8gles\n")
    store._put("datacenter.cfg", b'{"ha": {"max_worker": 2}, "note": "\xff"}')
    assert cfg.rules() == {}
    assert cfg.ha_options()["max_worker"] == 2
    cfg.resources()
    assert len(log) == 3  # once per file and episode, not every read


def test_a_damaged_section_keeps_its_last_good_version(store: Store) -> None:
    cfg, log = _files(store)
    store.write_text("resources.cfg", GOOD)
    assert cfg.resources()["dummy:b"]["node"] == "node2"
    broken = (
        "dummy: a\n\tnode node3\n\tstate started\n\n"
        "dummy: b\n\tnode node1\n\tstate bogus\n\n"
        "dummy: c\n\tnode node1\n"
    )
    store.write_text("resources.cfg", broken)
    # b's section now fails: a's new (readable) version is used, b keeps its last good one,
    # c is new and readable
    res = cfg.resources()
    assert res["dummy:a"]["node"] == "node3" and res["dummy:b"]["node"] == "node2"
    assert res["dummy:c"]["node"] == "node1"
    assert "resources.cfg:7: state" in log.text() and "last good version of dummy:b" in log.text()


def test_no_last_good_version_uses_the_readable_sections(store: Store) -> None:
    cfg, _ = _files(store)
    store.write_text("resources.cfg", GOOD + "\ndummy: c\n\tstate bogus\n")
    assert set(cfg.resources()) == {"dummy:a", "dummy:b"}  # c was never readable


def test_rewrite_keeps_an_unreadable_file_aside(store: Store) -> None:
    cfg, log = _files(store)
    store.write_text("resources.cfg", GOOD)
    cfg.resources()
    broken = GOOD + "\ndummy: c\n\tstate bogus\n"
    store.write_text("resources.cfg", broken)

    def move(res: dict[str, Any]) -> bool:
        res["dummy:a"]["node"] = "node2"
        return True

    aside = cfg.rewrite_resources(move)
    assert store.read_resources()["dummy:a"]["node"] == "node2"  # readable again
    assert aside is not None and store.read_text(aside) == broken
    assert f"the file as it was is kept as {store.location(aside)}" in log.text()


def test_unreadable_files_without_last_good_use_defaults(store: Store) -> None:
    cfg, log = _files(store)
    store.write_text("datacenter.cfg", "{not json")
    store.write_text("groups.cfg", "group: g\n\tbogus 1\n")
    assert cfg.ha_options() == {"shutdown_policy": "conditional", "max_worker": 4}
    assert cfg.groups() == {}
    assert "using defaults" in log.text()
