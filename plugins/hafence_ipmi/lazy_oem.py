"""Import pyghmi's OEM lookup only when pyghmi asks for an OEM handler.

``pyghmi.ipmi.command`` imports ``pyghmi.ipmi.oem.lookup`` at the top, which imports
the Lenovo handlers and, through them, pyghmi's Redfish client and HTTP stack: about
three quarters of pyghmi's import time, paid by every one-shot ``hafence`` command.
The driver speaks raw chassis commands and never needs an OEM handler. This puts a
stand-in for the lookup module in place before ``command`` is imported; its
``get_oem_handler`` loads the real module the first time pyghmi calls it (some
``Command`` methods do) and hands over from then on.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
import types

NAME = "pyghmi.ipmi.oem.lookup"


def defer() -> None:
    """Install the stand-in, unless the real lookup is already imported."""
    if NAME in sys.modules:
        return
    import pyghmi.ipmi.oem as package

    spec = importlib.machinery.PathFinder.find_spec(NAME, package.__path__)
    if spec is None or spec.loader is None:
        return  # not where pyghmi 1.x keeps it: let command import it as usual
    loader = spec.loader
    lock = threading.Lock()
    loaded: list[types.ModuleType] = []

    def real() -> types.ModuleType:
        with lock:
            if not loaded:
                module = importlib.util.module_from_spec(spec)
                sys.modules[NAME] = module
                loader.exec_module(module)
                loaded.append(module)
        return loaded[0]

    def forward(attr: str) -> object:
        if attr.startswith("__"):  # the import system probing (__path__...): not a use
            raise AttributeError(attr)
        return getattr(real(), attr)

    stand_in = types.ModuleType(NAME, __doc__)
    stand_in.__dict__.update(
        # command binds get_oem_handler when imported; anything else is looked up on use
        get_oem_handler=lambda *args, **kw: real().get_oem_handler(*args, **kw),
        __getattr__=forward,
    )
    sys.modules[NAME] = stand_in
