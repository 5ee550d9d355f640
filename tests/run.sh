#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it.
#   - a virtualenv in .venv with robeing and its test dependencies
#   - the local RabbitMQ, running, with the plugins robeing needs
#   - for a full CI run, the local three-node cluster (deploy/local-cluster.sh)
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

# The cluster tests (marker `cluster`) need the local three-node cluster. It
# is started here for a full run under CI, or whenever ROBEING_CLUSTER=1, and
# stopped afterwards unless it was already up; ROBEING_CLUSTER=0 never starts
# it (the cluster tests then skip, saying how to start it).
cluster=${ROBEING_CLUSTER:-auto}
started=""
if [ "$cluster" = 1 ] || { [ "$cluster" = auto ] && [ -n "${CI:-}" ] && [ $# -eq 0 ]; }; then
    if ! bash deploy/local-cluster.sh status 2>/dev/null | grep -c ' running$' | grep -qx 3; then
        started=1
    fi
    bash deploy/local-cluster.sh up >/dev/null
    export ROBEING_REQUIRE_CLUSTER=1
fi
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ -n "$started" ]; then
    bash deploy/local-cluster.sh down >/dev/null 2>&1 || true
fi
exit "$status"
