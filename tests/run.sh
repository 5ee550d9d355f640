#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it.
#   - a virtualenv in .venv with robeing and its test dependencies
#   - the local RabbitMQ, running, with the plugins robeing needs
# Extra arguments go to pytest (e.g. `bash tests/run.sh tests/unit -q`).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

bash deploy/local-broker.sh

exec .venv/bin/python -m pytest "$@"
