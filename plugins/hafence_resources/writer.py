"""``writer``: a service that writes to shared storage, so a double writer shows.

``writer:NAME`` is a :class:`~hafence_resources.dummy.DummyType` process (same pid file,
stop and status rules) that appends one line every 50 ms to ``WRITER_DIR/NAME.log``::

    <unix time> <node> <sid> <pid>-<random token> <counter>

``WRITER_DIR`` is ``$HAFENCE_WRITER_DIR`` (default ``/var/lib/hafence/writer``): a stand-in
for storage every node reaches (a SAN, NFS). Each process writes with its own token, so
a reader sees each copy's life as an interval of lines; two copies' intervals that
overlap are two writers at once - what fencing exists to prevent. ``hafence lab`` points
every node at one directory outside the nodes' namespaces and its checker reads it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hafence_resources.dummy import DummyType

MARKER = "hafence-writer"
# argv: -c MARKER SID NODE PATH. O_APPEND: each line lands whole, copies never clobber.
_PROGRAM = """\
import os, sys, time, uuid
sid, node, path = sys.argv[2], sys.argv[3], sys.argv[4]
me = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
n = 0
while True:
    n += 1
    os.write(fd, f"{time.time():.3f} {node} {sid} {me} {n}\\n".encode())
    time.sleep(0.05)
"""


def writer_dir() -> Path:
    return Path(os.environ.get("HAFENCE_WRITER_DIR", "/var/lib/hafence/writer"))


class WriterType(DummyType):
    name = "writer"
    description = "a real process appending to a shared file every 50 ms (shows double writers)"
    marker = MARKER
    program = _PROGRAM

    def log_path(self, rid: str) -> Path:
        self.pidfile(rid)  # validates the name
        return writer_dir() / f"{rid}.log"

    def argv(self, rid: str) -> list[str]:
        path = self.log_path(rid)
        path.parent.mkdir(parents=True, exist_ok=True)
        # python needs its own path as argv[0]: the marker words label it instead
        return [sys.executable, "-c", self.program, self.marker, self.sid(rid), self.node,
                str(path)]  # fmt: skip

    def executable(self) -> str | None:
        return None

    def ours(self, argv: list[str], rid: str) -> bool:
        return argv[3:5] == [self.marker, self.sid(rid)]
