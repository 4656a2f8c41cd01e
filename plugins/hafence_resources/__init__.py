"""hafence plugin 'resources': the first-party HA resource types.

- ``vm`` / ``ct``: Proxmox VE guests through ``qm`` / ``pct`` (unavailable elsewhere);
- ``systemd``: a systemd unit (``systemd:nginx.service``) through ``systemctl``;
- ``dummy``: a real long-lived process per service, for tests and demos;
- ``writer``: a ``dummy`` that appends to a shared file, so two copies at once show.
"""

from hafence.hookspecs import hookimpl
from hafence_resources.dummy import DummyType
from hafence_resources.guests import CtType, VmType
from hafence_resources.systemd import SystemdType
from hafence_resources.writer import WriterType

__all__ = ["CtType", "DummyType", "SystemdType", "VmType", "WriterType"]


@hookimpl
def hafence_resource_types() -> list[type]:
    return [VmType, CtType, SystemdType, DummyType, WriterType]
