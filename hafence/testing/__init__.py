"""hafence.testing: the driver conformance kit and test peers.

``from hafence.testing import DriverConformance`` (see :mod:`hafence.testing.conformance`);
the pytest plugin :mod:`hafence.testing.plugin` (loaded automatically where hafence is
installed) adds the loopback fixtures. Imported lazily: production code importing a peer
does not need pytest.
"""

from typing import Any

__all__ = ["CHECKS", "DriverConformance", "wrong_credentials"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hafence.testing import conformance

        return getattr(conformance, name)
    raise AttributeError(f"module 'hafence.testing' has no attribute {name!r}")
