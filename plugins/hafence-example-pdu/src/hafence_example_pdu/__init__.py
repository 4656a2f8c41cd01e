"""hafence plugin 'example_pdu': a fictional PDU, the template for vendor plugins."""

from hafence.hookspecs import hookimpl


@hookimpl
def hafence_fence_drivers() -> list[type]:
    # Imported here so that listing plugins stays cheap and a broken driver module
    # is reported by name instead of breaking the import of the plugin.
    from hafence_example_pdu.driver import ExamplePduDriver

    return [ExamplePduDriver]
