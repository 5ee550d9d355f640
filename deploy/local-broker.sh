#!/usr/bin/env bash
# Make sure the local RabbitMQ runs with the plugins robeing needs.
#   management      - HTTP API (vhosts for tests, `robeing status`) and the UI on :15672
#   event_exchange  - connection/consumer events for instant failure detection
# Idempotent; safe to run on every CI start and before `robeing up`.
set -euo pipefail

PLUGINS=(rabbitmq_management rabbitmq_event_exchange)

if ! command -v rabbitmqctl >/dev/null 2>&1; then
    echo "rabbitmqctl not found: install RabbitMQ (Debian: apt-get install rabbitmq-server)" >&2
    exit 1
fi

if ! rabbitmqctl -q status >/dev/null 2>&1; then
    echo "starting rabbitmq-server" >&2
    rabbitmq-server -detached
fi
rabbitmqctl -q await_startup --timeout 120 >/dev/null
rabbitmq-plugins -q enable "${PLUGINS[@]}" >/dev/null
# The management listener comes up a moment after the plugin is enabled.
for _ in $(seq 1 60); do
    if curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1; then
        echo "rabbitmq ready: amqp://127.0.0.1:5672, management http://127.0.0.1:15672" >&2
        exit 0
    fi
    sleep 1
done
echo "management API did not come up on :15672" >&2
exit 1
