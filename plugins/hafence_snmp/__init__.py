"""hafence plugin 'snmp_ifmib': switch-port fencing through SNMP IF-MIB (pysnmp 7)."""

from hafence.hookspecs import hookimpl


@hookimpl
def hafence_fence_drivers() -> list[type]:
    from hafence_snmp.ifmib import IfMibDriver

    return [IfMibDriver]
