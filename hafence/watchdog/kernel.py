"""Which kernel an entry point's watchdog code talks to: the real one or a fake one.

Library code always gets the real kernel (:func:`hafence.watchdog.device.default_syscalls`)
unless its caller passes another :class:`~hafence.watchdog.device.Syscalls`. Only entry
points -- ``hafence-watchdog-mux``, ``hafence watchdog``, the hardware test -- choose the
fake kernel of :mod:`hafence.watchdog.fake` (tests, the lab), from their ``--fake-device``
option or ``$HAFENCE_WATCHDOG_FAKE``, and they say so loudly: a node on a fake watchdog
cannot reset itself.
"""

from __future__ import annotations

from collections.abc import Callable

from hafence.watchdog.device import Syscalls, default_syscalls

FAKE_ENV = "HAFENCE_WATCHDOG_FAKE"


def choose_kernel(
    fake_state: str | None, *, warn: Callable[[str], None], sysfs_root: str = "/sys"
) -> Syscalls:
    """The real kernel, or the fake one stored in ``fake_state`` (announced through ``warn``)."""
    if not fake_state:
        return default_syscalls()
    from hafence.watchdog.fake import FakeKernel

    warn(
        f"FAKE watchdog kernel {fake_state} (--fake-device / ${FAKE_ENV}): no hardware "
        "watchdog is used, this node cannot reset itself - tests and labs only"
    )
    return FakeKernel(fake_state, sysfs_root=sysfs_root)
