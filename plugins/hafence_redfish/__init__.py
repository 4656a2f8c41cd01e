"""hafence plugin 'redfish': BMC power control over Redfish through sushy.

The driver class loads without sushy (so ``hafence drivers`` and metadata work); it
asks for ``pip install 'hafence[redfish]'`` when configured without it.
"""

from hafence.hookspecs import hookimpl


@hookimpl
def hafence_fence_drivers() -> list[type]:
    from hafence_redfish.driver import RedfishDriver

    return [RedfishDriver]
