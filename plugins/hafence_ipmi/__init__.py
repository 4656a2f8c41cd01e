"""hafence plugin 'ipmi': BMC power control over IPMI 2.0 through pyghmi."""

from hafence.hookspecs import hookimpl
from hafence_ipmi import lazy_oem

lazy_oem.defer()  # before anything imports pyghmi.ipmi.command


@hookimpl
def hafence_fence_drivers() -> list[type]:
    from hafence_ipmi.driver import IpmiDriver

    return [IpmiDriver]
