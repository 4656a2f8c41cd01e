"""hafence plugin 'ipmi': BMC power control over IPMI 2.0 through pyghmi."""

from hafence.hookspecs import hookimpl


@hookimpl
def hafence_fence_drivers() -> list[type]:
    from hafence_ipmi.driver import IpmiDriver

    return [IpmiDriver]
