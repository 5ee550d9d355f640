#!/usr/bin/env bash
# Set up and run a local robeing fleet doing real work against the local broker.
#   bash deploy/demo.sh            # fleet + demo report, keeps running until Ctrl-C
#   bash deploy/demo.sh --once     # fleet + demo report, then stop
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e .

bash deploy/local-broker.sh

exec .venv/bin/robeing up "$@"
