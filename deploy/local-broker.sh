#!/usr/bin/env bash
# Make sure a local RabbitMQ runs with the plugins robeing needs, installing it if missing.
#   management      - HTTP API (vhosts for tests, `robeing status`) and the UI on :15672
#   event_exchange  - connection events for instant failure detection
#   prometheus      - the broker's own metrics on :15692
# When RabbitMQ is not installed it is installed with apt-get (Debian, Ubuntu)
# if this user may (root, or sudo without a password); otherwise the script
# says exactly what to run. Idempotent; safe to run on every CI start and
# before `robeing up`. RABBITMQ_API overrides where the management API is.
set -euo pipefail

PLUGINS=(rabbitmq_management rabbitmq_event_exchange rabbitmq_prometheus)
API=${RABBITMQ_API:-http://127.0.0.1:15672/api}

say() { echo "local-broker: $*" >&2; }

# Who may do what needs root: "" as root, "sudo -n" with password-less sudo, else "no".
if [ "$(id -u)" -eq 0 ]; then
    AS_ROOT=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    AS_ROOT="sudo -n"
else
    AS_ROOT="no"
fi
as_root() { if [ -z "$AS_ROOT" ]; then "$@"; else $AS_ROOT "$@"; fi; }

api() { curl -fsS -u guest:guest "$API/$1" >/dev/null 2>&1; }

ready() {
    # The API answers with guest/guest and the event exchange plugin has made its exchange.
    api overview && api "exchanges/%2F/amq.rabbitmq.event"
}

if ready; then
    say "rabbitmq ready: amqp://127.0.0.1:5672, management http://127.0.0.1:15672"
    exit 0
fi

if ! command -v rabbitmqctl >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$AS_ROOT" != no ]; then
        say "RabbitMQ is not installed: installing rabbitmq-server with apt-get"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server
    else
        say "RabbitMQ is not installed, and this user may not install it. Run one of:"
        if command -v apt-get >/dev/null 2>&1; then
            say "  sudo apt-get update && sudo apt-get install -y rabbitmq-server"
            say "  then again: bash deploy/local-broker.sh (as root: sudo bash deploy/local-broker.sh)"
        elif command -v brew >/dev/null 2>&1; then
            say "  brew install rabbitmq && brew services start rabbitmq"
            say "  $(brew --prefix)/sbin/rabbitmq-plugins enable ${PLUGINS[*]}"
        else
            say "  your system's package for RabbitMQ 3.10 or newer (rabbitmq-server), then this script"
        fi
        say "  or, with Docker: docker run -d --name rabbitmq -p 5672:5672 -p 15672:15672 rabbitmq:3.13-management"
        say "    and: docker exec rabbitmq rabbitmq-plugins enable ${PLUGINS[*]}"
        exit 1
    fi
fi

if [ "$AS_ROOT" = no ]; then
    say "RabbitMQ is installed but not ready, and starting it or enabling plugins needs root. Run:"
    say "  sudo bash deploy/local-broker.sh"
    say "  (or: sudo rabbitmq-plugins enable ${PLUGINS[*]} && sudo service rabbitmq-server start)"
    exit 1
fi

if ! as_root rabbitmqctl -q status >/dev/null 2>&1; then
    say "starting rabbitmq-server"
    if [ -d /run/systemd/system ]; then
        as_root systemctl start rabbitmq-server
    elif command -v service >/dev/null 2>&1 && as_root service rabbitmq-server start >/dev/null 2>&1; then
        :
    else
        as_root rabbitmq-server -detached
    fi
fi
as_root rabbitmqctl -q await_startup --timeout 120 >/dev/null
as_root rabbitmq-plugins -q enable "${PLUGINS[@]}" >/dev/null
# The management listener comes up a moment after the plugin is enabled.
for _ in $(seq 1 60); do
    if ready; then
        say "rabbitmq ready: amqp://127.0.0.1:5672, management http://127.0.0.1:15672"
        exit 0
    fi
    sleep 1
done
say "the management API did not come up at $API"
exit 1
