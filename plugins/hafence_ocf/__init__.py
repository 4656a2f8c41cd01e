"""hafence plugin 'ocf': OCF resource agents (Debian's resource-agents) as HA services.

``ocf:NAME`` services run the agent and parameters that ``ocf.cfg`` gives for NAME
(``$HAFENCE_OCF_CFG``, default /etc/hafence/ocf.cfg); see :mod:`hafence_ocf.config` and
:mod:`hafence_ocf.resource`.
"""

from hafence.hookspecs import hookimpl


@hookimpl
def hafence_resource_types() -> list[type]:
    from hafence_ocf.resource import OcfType

    return [OcfType]
