"""hafence plugin 'watchdogs': softdog, iTCO_wdt and generic /dev/watchdogN drivers."""

from hafence.hookspecs import hookimpl


@hookimpl
def hafence_watchdog_drivers() -> list[type]:
    from hafence_watchdogs.drivers import DRIVERS

    return list(DRIVERS)
