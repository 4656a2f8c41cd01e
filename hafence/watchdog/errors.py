"""Watchdog errors: each names the device, module or socket it is about."""

from __future__ import annotations

from hafence.errors import HafenceError


class WatchdogError(HafenceError):
    """Base class of watchdog failures."""


class DeviceMissingError(WatchdogError):
    """The watchdog device node (or its sysfs directory) does not exist."""


class DeviceBusyError(WatchdogError):
    """Another process holds the device open (the kernel allows one opener: EBUSY)."""


class ModuleLoadError(WatchdogError):
    """modprobe failed or the module is unknown."""


class MuxUnavailableError(WatchdogError):
    """No watchdog-mux answers on the socket."""


class MuxProtocolError(WatchdogError):
    """The mux refused a request or the connection broke mid-request."""


class ClientExpiredError(MuxProtocolError):
    """The mux declared this client dead: it has stopped feeding the hardware."""
