#!/usr/bin/env bash
# Install hafence (editable) with its test dependencies and the real test peers.
# Idempotent: skips what is already there. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

# resource-agents: OCF agents for the ocf: resource type; pacemaker + pacemaker-cli-utils:
# Pacemaker's own fencer and stonith_admin run fence_hafence in tests/fence_hafence;
# nftables: hafence lab's partitions and lossy links (tc is in iproute2).
APT_PACKAGES=(openipmi ipmitool fence-agents snmp snmpd etcd-server etcd-client iproute2
              resource-agents pacemaker pacemaker-cli-utils nftables)
need=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install.sh: apt-get install ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Pacemaker is only a test peer here (its fencer runs stand-alone inside the tests):
  # a corosync/pacemaker cluster the package enabled must not run on this machine.
  if [[ " ${need[*]} " == *" pacemaker "* ]] && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now pacemaker corosync >/dev/null 2>&1 || true
  fi
fi

PY="${PYTHON:-python3}"
pip_install() {
  local out
  if ! out=$("$PY" -m pip install -q --disable-pip-version-check "$@" 2>&1); then
    echo "$out" >&2; echo "install.sh: pip install $* failed" >&2; exit 1
  fi
}
pip_install -e '.[test]'
# The example vendor plugin is a separate distribution, installed the way a vendor's would be.
[ ! -f plugins/hafence-example-pdu/pyproject.toml ] || pip_install -e plugins/hafence-example-pdu
