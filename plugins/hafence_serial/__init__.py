"""hafence plugin 'serial': power switches and relay boards on a serial line (pyserial)."""

from hafence.hookspecs import hookimpl


@hookimpl
def hafence_fence_drivers() -> list[type]:
    from hafence_serial.driver import SerialDriver

    return [SerialDriver]
