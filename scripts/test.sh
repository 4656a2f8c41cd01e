#!/usr/bin/env bash
# The whole test suite: installs what it needs, checks style, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python3 -m ruff check .
# Bytecode for the many Python processes the tests start (daemons, CLI, peers): with
# PYTHONDONTWRITEBYTECODE set, as on some CI machines, each would compile hafence anew.
python3 -m compileall -q hafence plugins >/dev/null
# One worker per core; idle workers steal queued tests, so the slow checks (marked
# 'slow', see tests/conftest.py) do not leave a core idle at the end. Every peer a
# test starts binds ports it probed free, so workers never collide.
python3 -m pytest -q -n auto --dist worksteal "$@"
