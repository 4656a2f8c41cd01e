#!/usr/bin/env bash
# Install hafence and run its main job on the embedded default: a fence drill against a
# simulated BMC (OpenIPMI ipmi_sim on 127.0.0.1), then an HA failover on the simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec hafence demo "$@"
