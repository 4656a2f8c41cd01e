"""Fixtures for the ocf resource type: an ocf.cfg per test, and an OCF root that has the
real resource-agents plus a scriptable agent (``ocf:hafence-test:Probe``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

REAL_ROOT = Path("/usr/lib/ocf")

# A real OCF agent (shell, sourcing resource-agents' ocf-shellfuncs) whose monitor/start/
# stop exit codes come from files, so every OCF exit code can be produced on purpose.
# It records its argv and the OCF_RESKEY_secret it received, to check how params travel.
PROBE = r"""#!/bin/sh
: ${OCF_FUNCTIONS_DIR=${OCF_ROOT}/lib/heartbeat}
. ${OCF_FUNCTIONS_DIR}/ocf-shellfuncs
dir="$OCF_RESKEY_dir"
case "$1" in
meta-data) cat <<END
<?xml version="1.0"?>
<resource-agent name="Probe" version="1.0">
<version>1.0</version>
<longdesc lang="en">test agent</longdesc><shortdesc lang="en">test agent</shortdesc>
<parameters>
<parameter name="dir" required="1"><longdesc lang="en">d</longdesc>
<shortdesc lang="en">d</shortdesc><content type="string"/></parameter>
<parameter name="secret"><longdesc lang="en">s</longdesc>
<shortdesc lang="en">s</shortdesc><content type="string"/></parameter>
<parameter name="count"><longdesc lang="en">c</longdesc>
<shortdesc lang="en">c</shortdesc><content type="integer" default="1"/></parameter>
</parameters>
<actions>
<action name="start" timeout="7s"/><action name="stop" timeout="9s"/>
<action name="monitor" timeout="5s" interval="10s"/>
<action name="meta-data" timeout="5s"/><action name="validate-all" timeout="5s"/>
</actions>
</resource-agent>
END
exit 0;;
esac
echo "$0 $*" >> "$dir/argv"
printf '%s\n' "$OCF_RESKEY_secret" > "$dir/secret"
echo "$OCF_RESKEY_CRM_meta_timeout" > "$dir/timeout-$1"
if [ -f "$dir/sleep-$1" ]; then
    sleep "$(cat "$dir/sleep-$1")" &
    echo $! > "$dir/sleep.pid"
    wait
fi
if [ -f "$dir/rc-$1" ]; then
    echo "probe $1 said $OCF_RESKEY_secret" >&2
    exit "$(cat "$dir/rc-$1")"
fi
case "$1" in
start) touch "$dir/running"; exit 0;;
stop) rm -f "$dir/running"; exit 0;;
monitor) [ -f "$dir/running" ] && exit 0; exit 7;;
validate-all) exit 0;;
*) exit 3;;
esac
"""


@pytest.fixture
def ocf_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """OCF_ROOT with the installed agents and library, plus hafence-test:Probe."""
    if not (REAL_ROOT / "resource.d" / "heartbeat" / "Dummy").exists():
        pytest.fail("Debian's resource-agents is not installed (scripts/install.sh installs it)")
    root = tmp_path / "ocf"
    (root / "resource.d" / "hafence-test").mkdir(parents=True)
    (root / "lib").symlink_to(REAL_ROOT / "lib")
    (root / "resource.d" / "heartbeat").symlink_to(REAL_ROOT / "resource.d" / "heartbeat")
    probe = root / "resource.d" / "hafence-test" / "Probe"
    probe.write_text(PROBE)
    probe.chmod(0o755)
    monkeypatch.setenv("OCF_ROOT", str(root))
    return root


@pytest.fixture
def ocf_cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "ocf.cfg"
    monkeypatch.setenv("HAFENCE_OCF_CFG", str(path))
    yield path
