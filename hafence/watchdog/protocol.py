"""The watchdog-mux wire protocol: one text line per request and per reply.

Client -> mux (UTF-8, ``\\n`` terminated):

``HELLO <name> <timeout>``  register as a watchdog client with its own timeout (seconds);
                            the reply ``OK <timeout> <hardware timeout>`` names the
                            device's timeout too (``?`` when the driver cannot tell).
``FEED [<since>]``          keepalive; the client's deadline moves to since + timeout, where
                            ``since`` is the ``CLOCK_MONOTONIC`` time the client vouches
                            for (default and upper bound: when the mux reads the line);
                            client and mux share that clock (one host, one time namespace).
``V``                       magic close: the client leaves without tripping the watchdog.
``STATUS``                  JSON status (a connection that never says HELLO is no client).

Replies: ``OK [detail]``, ``ERR <code> <message>`` or, for STATUS, ``OK `` + one JSON
line. A registered client that disconnects without ``V`` or misses its deadline makes
the mux stop feeding the hardware: the node resets.
"""

from __future__ import annotations

import os

DEFAULT_SOCKET = "/run/hafence/watchdog-mux.sock"
SOCKET_ENV = "HAFENCE_WATCHDOG_MUX_SOCKET"
MAX_LINE = 4096
MIN_CLIENT_TIMEOUT = 1.0
MAX_CLIENT_TIMEOUT = 3600.0

# ERR codes
E_EXPIRED = "expired"  # the client missed its deadline (or the mux tripped already)
E_PROTOCOL = "protocol"  # malformed request
E_STATE = "state"  # request not valid now (FEED before HELLO, HELLO twice)


def default_socket() -> str:
    """The mux socket: ``$HAFENCE_WATCHDOG_MUX_SOCKET`` or /run/hafence/watchdog-mux.sock."""
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
