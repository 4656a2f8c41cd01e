#!/usr/bin/env bash
# The whole test suite: installs what it needs, checks style, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python3 -m ruff check .
python3 -m pytest -q "$@"
