#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, for tests and for trying
# robeing's failover. It never touches the system broker (5672/15672).
#
#   deploy/local-cluster.sh up          start c1..c3@localhost and cluster them (idempotent)
#   deploy/local-cluster.sh down        stop all three and delete their data
#   deploy/local-cluster.sh status      one line per node: running / paused / stopped
#   deploy/local-cluster.sh urls        the AMQP_URL / ROBEING_MANAGEMENT_URL lists, for `export`
#   deploy/local-cluster.sh kill N      kill -9 node N (1..3)
#   deploy/local-cluster.sh pause N     SIGSTOP node N (its peers see a partition after net_ticktime)
#   deploy/local-cluster.sh resume N    SIGCONT node N
#   deploy/local-cluster.sh restart N   stop node N cleanly (or find it dead), start it, wait until it is back
#
# Node N listens on AMQP 568N, management 1568N, prometheus 1570N, Erlang
# distribution 2568N. Each node has its own folder under
# $ROBEING_CLUSTER_DIR (default /tmp/robeing-cluster/cN): config, data
# (mnesia), logs, enabled-plugins file and pid file. All three share one
# Erlang cookie, kept in that folder (so it is not the system broker's).
# Run as root, the nodes run as the `rabbitmq` user and their folders are
# owned by it (rabbitmq-server refuses otherwise); run as another user, they
# run as that user. net_ticktime is 10 s (60 s is RabbitMQ's default) so that a
# paused node is declared down quickly, and partitions are healed with
# autoheal: a node SIGSTOPped past net_ticktime comes back to find its peers
# gone, and under pause_minority it was seen to keep running on its own
# (a lasting partition, clients on it split from the rest); autoheal
# restarts the losing side, which closes its clients' connections.
set -euo pipefail

BASE=${ROBEING_CLUSTER_DIR:-/tmp/robeing-cluster}
NODES=(1 2 3)
PLUGINS=(rabbitmq_management rabbitmq_event_exchange rabbitmq_prometheus)
RMQ_BIN=${RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}
NET_TICKTIME=${ROBEING_CLUSTER_NET_TICKTIME:-10}

say() { echo "local-cluster: $*" >&2; }
die() { say "$*"; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
    RUN_AS=rabbitmq
    id rabbitmq >/dev/null 2>&1 || die "the rabbitmq user does not exist (install rabbitmq-server)"
else
    RUN_AS=$(id -un)
fi
[ -x "$RMQ_BIN/rabbitmq-server" ] || die "no RabbitMQ at $RMQ_BIN (install rabbitmq-server, or set RABBITMQ_BIN)"

node_name() { echo "c$1@localhost"; }
node_dir() { echo "$BASE/c$1"; }
amqp_port() { echo $((5680 + $1)); }
mgmt_port() { echo $((15680 + $1)); }
prom_port() { echo $((15700 + $1)); }
dist_port() { echo $((25680 + $1)); }

check_n() {
    case "${1:-}" in
        1|2|3) ;;
        *) die "node number must be 1, 2 or 3, not '${1:-}'" ;;
    esac
}

# Run a command as the nodes' user with node N's environment.
as_node() {
    local n=$1; shift
    local dir; dir=$(node_dir "$n")
    local envs=(
        HOME="$BASE"
        PATH="$RMQ_BIN:/usr/bin:/bin:/usr/sbin:/sbin"
        RABBITMQ_NODENAME="$(node_name "$n")"
        RABBITMQ_NODE_PORT="$(amqp_port "$n")"
        RABBITMQ_DIST_PORT="$(dist_port "$n")"
        RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
        RABBITMQ_MNESIA_BASE="$dir/mnesia"
        RABBITMQ_LOG_BASE="$dir/log"
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
        RABBITMQ_PID_FILE="$dir/rabbitmq.pid"
        ERL_EPMD_ADDRESS=127.0.0.1
    )
    if [ "$RUN_AS" = "$(id -un)" ]; then
        (cd "$dir" && env "${envs[@]}" "$@")
    else
        (cd "$dir" && runuser -u "$RUN_AS" -- env "${envs[@]}" "$@")
    fi
}

ctl() { local n=$1; shift; as_node "$n" "$RMQ_BIN/rabbitmqctl" -q -n "$(node_name "$n")" "$@"; }

node_pid() {
    local pidfile; pidfile="$(node_dir "$1")/rabbitmq.pid"
    [ -s "$pidfile" ] || return 1
    local pid; pid=$(cat "$pidfile")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

is_paused() {
    local pid; pid=$(node_pid "$1") || return 1
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = T ]
}

api_ok() {
    curl -fsS -m 3 -u guest:guest "http://127.0.0.1:$(mgmt_port "$1")/api/overview" >/dev/null 2>&1
}

partitioned() {
    # Whether node N sees a partition (the API lists it under "partitions").
    curl -fsS -m 3 -u guest:guest "http://127.0.0.1:$(mgmt_port "$1")/api/nodes" 2>/dev/null \
        | grep -q '"partitions":\["'
}

prepare() {
    local n=$1 dir; dir=$(node_dir "$n")
    mkdir -p "$dir/mnesia" "$dir/log"
    if [ ! -s "$BASE/.erlang.cookie" ]; then
        # One cookie for the three nodes and their CLI tools.
        head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 >"$BASE/.erlang.cookie"
        chmod 400 "$BASE/.erlang.cookie"
    fi
    : >"$dir/rabbitmq-env.conf"
    echo "[]." >"$dir/advanced.config"
    cat >"$dir/rabbitmq.conf" <<EOF
# Node c$n of robeing's local test cluster (written by deploy/local-cluster.sh).
listeners.tcp.default = $(amqp_port "$n")
management.tcp.port = $(mgmt_port "$n")
prometheus.tcp.port = $(prom_port "$n")
cluster_name = robeing-local
net_ticktime = $NET_TICKTIME
cluster_partition_handling = autoheal
consumer_timeout = 10800000
disk_free_limit.absolute = 200MB
vm_memory_high_watermark.relative = 0.2
log.file.level = info
log.console = false
EOF
    [ -f "$dir/enabled_plugins" ] || echo "[]." >"$dir/enabled_plugins"
    if [ "$RUN_AS" != "$(id -un)" ]; then
        chown -R "$RUN_AS:" "$BASE"
    fi
    # The node's own enabled-plugins file, written by rabbitmq-plugins itself.
    as_node "$n" "$RMQ_BIN/rabbitmq-plugins" -q -n "$(node_name "$n")" enable --offline "${PLUGINS[@]}" >/dev/null
}

start_node() {
    local n=$1
    if node_pid "$n" >/dev/null; then
        return 0
    fi
    prepare "$n"
    say "starting $(node_name "$n") (amqp $(amqp_port "$n"), management $(mgmt_port "$n"))"
    as_node "$n" setsid "$RMQ_BIN/rabbitmq-server" \
        >"$(node_dir "$n")/log/startup.log" 2>&1 </dev/null &
    # rabbitmq-server writes the pid file once the VM runs; wait for the boot.
    for _ in $(seq 1 60); do
        node_pid "$n" >/dev/null && break
        sleep 0.5
    done
    node_pid "$n" >/dev/null || die "$(node_name "$n") did not start: see $(node_dir "$n")/log/startup.log"
    ctl "$n" await_startup --timeout 120 >/dev/null \
        || die "$(node_name "$n") did not boot: see $(node_dir "$n")/log/"
}

in_cluster() {
    # Whether node N's cluster has c1 as a member.
    ctl "$1" cluster_status --formatter json 2>/dev/null | grep -q "\"$(node_name 1)\""
}

join() {
    local n=$1
    [ "$n" = 1 ] && return 0
    in_cluster "$n" && return 0
    say "joining $(node_name "$n") to $(node_name 1)"
    ctl "$n" stop_app >/dev/null
    ctl "$n" join_cluster "$(node_name 1)" >/dev/null
    ctl "$n" start_app >/dev/null
}

wait_api() {
    local n=$1
    for _ in $(seq 1 60); do
        api_ok "$n" && return 0
        sleep 1
    done
    die "the management API of $(node_name "$n") did not answer on $(mgmt_port "$n")"
}

urls() {
    local amqp=() mgmt=()
    for n in "${NODES[@]}"; do
        amqp+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/")
        mgmt+=("http://127.0.0.1:$(mgmt_port "$n")")
    done
    (IFS=,; echo "export AMQP_URL='${amqp[*]}'"; echo "export ROBEING_MANAGEMENT_URL='${mgmt[*]}'")
}

cmd_up() {
    mkdir -p "$BASE"
    for n in "${NODES[@]}"; do start_node "$n"; done
    for n in "${NODES[@]}"; do join "$n"; done
    for n in "${NODES[@]}"; do wait_api "$n"; done
    say "cluster ready: amqp 127.0.0.1:5681-5683, management 15681-15683"
    urls
}

stop_node() {
    local n=$1 pid
    pid=$(node_pid "$n") || return 0
    is_paused "$n" && kill -CONT "$pid"
    ctl "$n" stop >/dev/null 2>&1 || true
    for _ in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    kill -9 "$pid" 2>/dev/null || true
}

cmd_down() {
    for n in "${NODES[@]}"; do stop_node "$n"; done
    # epmd stays (it is shared with the system broker); only our nodes leave it.
    rm -rf "$BASE"
    say "cluster stopped and removed ($BASE)"
}

cmd_status() {
    for n in "${NODES[@]}"; do
        local state
        if is_paused "$n"; then state=paused
        elif node_pid "$n" >/dev/null; then
            if ! api_ok "$n"; then state="running (management API not answering)"
            elif partitioned "$n"; then state="running (partitioned)"
            else state=running
            fi
        else state=stopped
        fi
        echo "$(node_name "$n") amqp=$(amqp_port "$n") management=$(mgmt_port "$n") $state"
    done
}

cmd_kill() {
    check_n "$1"
    local pid; pid=$(node_pid "$1") || die "$(node_name "$1") is not running"
    kill -9 "$pid"
    say "killed $(node_name "$1") (pid $pid)"
}

cmd_pause() {
    check_n "$1"
    local pid; pid=$(node_pid "$1") || die "$(node_name "$1") is not running"
    kill -STOP "$pid"
    say "paused $(node_name "$1") (pid $pid)"
}

cmd_resume() {
    check_n "$1"
    local pid; pid=$(node_pid "$1") || die "$(node_name "$1") is not running"
    kill -CONT "$pid"
    say "resumed $(node_name "$1") (pid $pid)"
}

cmd_restart() {
    check_n "$1"
    [ -d "$(node_dir "$1")" ] || die "no cluster at $BASE: run 'up' first"
    stop_node "$1"
    start_node "$1"
    wait_api "$1"
    say "restarted $(node_name "$1")"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    urls) urls ;;
    kill) cmd_kill "${2:-}" ;;
    pause) cmd_pause "${2:-}" ;;
    resume) cmd_resume "${2:-}" ;;
    restart) cmd_restart "${2:-}" ;;
    *) die "usage: $0 up|down|status|urls|kill N|pause N|resume N|restart N" ;;
esac
