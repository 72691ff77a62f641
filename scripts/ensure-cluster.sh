#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on this host, beside the default node (which
# stays untouched on 5672): nodes rabbit1@localhost .. rabbit3@localhost,
# AMQP on 127.0.0.1:5673-5675, management API on 127.0.0.1:15673-15675
# (guest/guest), Erlang distribution on 25673-25675. Used by the cluster
# tests (io/tests/cluster.rs), the cluster row of scripts/bench.sh and
# .ci/run.
#
#   scripts/ensure-cluster.sh          start what is down, join nodes 2 and 3
#                                      to node 1, wait until all three run
#                                      clustered (quick and silent when they do)
#   scripts/ensure-cluster.sh kill N   SIGKILL node N (a crash)
#   scripts/ensure-cluster.sh stop N   stop node N cleanly (rabbitmqctl stop)
#   scripts/ensure-cluster.sh start N  the same as no argument: node N, and any
#                                      other node that is down, run again
#   scripts/ensure-cluster.sh status   one line per node
#
# Each node has its own RABBITMQ_NODENAME, RABBITMQ_NODE_PORT,
# RABBITMQ_DIST_PORT, config file (listeners.tcp.local,
# management.tcp.port), RABBITMQ_ENABLED_PLUGINS_FILE, RABBITMQ_MNESIA_BASE,
# RABBITMQ_LOG_BASE and RABBITMQ_PID_FILE, all under $TASKLANE_CLUSTER_DIR
# (default /var/tmp/tasklane-cluster; not in git). The nodes run as the
# rabbitmq user with its home, so they share the default node's Erlang
# cookie and plain `rabbitmqctl -n rabbit2@localhost ...` works. This script
# stops and kills only these three nodes, found by their own pid files.
#
# On failure it prints one line starting with "ensure-cluster:" to stderr
# and exits 1. Environment: RABBITMQ_WAIT_SECS (default 180) bounds every
# wait; TASKLANE_CLUSTER_DIR moves the nodes' state.
set -euo pipefail

NODES=(1 2 3)
BASE="${TASKLANE_CLUSTER_DIR:-/var/tmp/tasklane-cluster}"
WAIT_SECS="${RABBITMQ_WAIT_SECS:-180}"
LOG="$BASE/ensure-cluster.log"
RABBITMQ_SBIN="${RABBITMQ_SBIN:-/usr/lib/rabbitmq/bin}"
# "guest:guest", base64.
GUEST_AUTH="Z3Vlc3Q6Z3Vlc3Q="

die() {
    echo "ensure-cluster: $*" >&2
    exit 1
}

say() {
    echo "ensure-cluster: $*" >&2
}

node_name() { echo "rabbit$1@localhost"; }
amqp_port() { echo $((5672 + $1)); }
mgmt_port() { echo $((15672 + $1)); }
dist_port() { echo $((25672 + $1)); }
node_dir() { echo "$BASE/rabbit$1"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# GET /api$2 on node $1's management API, as guest; the body on stdout, or
# failure unless the answer is 200. Plain bash, no curl needed.
mgmt_get() {
    timeout 5 bash -c '
        exec 3<>/dev/tcp/127.0.0.1/'"$(mgmt_port "$1")"' || exit 1
        printf "GET /api'"$2"' HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Basic '"$GUEST_AUTH"'\r\n\r\n" >&3
        IFS= read -r status <&3 || exit 1
        case "$status" in "HTTP/1."?" 200"*) ;; *) exit 1 ;; esac
        cat <&3
    ' 2>/dev/null
}

# True when node 1 reports all three nodes as members of its cluster and
# running, and every node answers on its AMQP port.
cluster_ok() {
    local n body
    for n in "${NODES[@]}"; do
        port_open "$(amqp_port "$n")" || return 1
    done
    body="$(mgmt_get 1 '/nodes?columns=name,running')" || return 1
    for n in "${NODES[@]}"; do
        grep -q "\"name\":\"$(node_name "$n")\",\"running\":true" <<<"$body" \
            || grep -q "\"running\":true,\"name\":\"$(node_name "$n")\"" <<<"$body" || return 1
    done
}

# True when node $1 is a member of node 1's cluster (running or not).
is_member() {
    mgmt_get 1 '/nodes?columns=name' | grep -q "\"name\":\"$(node_name "$1")\""
}

# The pid of node $1's Erlang VM, if it runs.
node_pid() {
    local pidfile pid
    pidfile="$(node_dir "$1")/pid"
    [ -s "$pidfile" ] || return 1
    pid="$(tr -dc 0-9 <"$pidfile")"
    [ -n "$pid" ] && [ -d "/proc/$pid" ] && grep -q beam "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

# Runs "$@" as the rabbitmq user, with its home (where the Erlang cookie
# is), from a directory it may read.
as_rabbitmq() {
    local home
    home="$(getent passwd rabbitmq | cut -d: -f6)"
    [ -n "$home" ] || die "there is no rabbitmq user (is rabbitmq-server installed? scripts/ensure-rabbitmq.sh installs it)"
    if [ "$(id -un)" = rabbitmq ]; then
        (cd "$home" && env HOME="$home" "$@")
    else
        (cd "$home" && as_root runuser -u rabbitmq -- env HOME="$home" "$@")
    fi
}

ctl() {
    local n="$1"
    shift
    timeout 120 rabbitmqctl -q -n "$(node_name "$n")" "$@" </dev/null >>"$LOG" 2>&1
}

# Writes node $1's config, plugins and (empty) env file; idempotent.
write_node_files() {
    local n="$1" dir
    dir="$(node_dir "$n")"
    as_root mkdir -p "$dir/mnesia" "$dir/log"
    printf '%s\n' \
        "# Written by tasklane's scripts/ensure-cluster.sh." \
        "listeners.tcp.local = 127.0.0.1:$(amqp_port "$n")" \
        "management.tcp.port = $(mgmt_port "$n")" \
        "management.tcp.ip = 127.0.0.1" | as_root tee "$dir/rabbitmq.conf" >/dev/null
    echo '[rabbitmq_management].' | as_root tee "$dir/enabled_plugins" >/dev/null
    # Keeps /etc/rabbitmq/rabbitmq-env.conf (the default node's NODENAME)
    # out of this node's environment.
    as_root touch "$dir/rabbitmq-env.conf"
    as_root chown -R rabbitmq: "$dir"
}

start_node() {
    local n="$1" dir
    dir="$(node_dir "$n")"
    write_node_files "$n"
    port_open "$(amqp_port "$n")" && die "127.0.0.1:$(amqp_port "$n") is taken by something that is not $(node_name "$n")"
    say "starting $(node_name "$n") (AMQP :$(amqp_port "$n"), management :$(mgmt_port "$n"))"
    as_rabbitmq \
        RABBITMQ_NODENAME="$(node_name "$n")" \
        RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
        RABBITMQ_DIST_PORT="$(dist_port "$n")" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$dir/pid" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        "$RABBITMQ_SBIN/rabbitmq-server" -detached </dev/null >>"$LOG" 2>&1 \
        || die "$(node_name "$n") failed to start (log: $LOG, $dir/log)"
}

wait_until() {
    local what="$1"
    shift
    local deadline=$((SECONDS + WAIT_SECS))
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${WAIT_SECS}s waiting for $what (log: $LOG)"
        sleep 0.2
    done
}

node_booted() {
    port_open "$(amqp_port "$1")" && port_open "$(mgmt_port "$1")"
}

ensure() {
    cluster_ok && return 0
    command -v rabbitmqctl >/dev/null 2>&1 || die "rabbitmqctl not found (scripts/ensure-rabbitmq.sh installs RabbitMQ)"
    as_root mkdir -p "$BASE"
    as_root touch "$LOG"
    as_root chmod 0666 "$LOG"
    local n started=0
    for n in "${NODES[@]}"; do
        if port_open "$(amqp_port "$n")"; then
            continue
        elif node_pid "$n" >/dev/null; then
            # The VM runs but the app is stopped (stop_app): start the app.
            say "starting the app of $(node_name "$n")"
            ctl "$n" start_app || true
        else
            start_node "$n"
            started=1
        fi
    done
    for n in "${NODES[@]}"; do
        wait_until "$(node_name "$n") to boot" node_booted "$n"
    done
    # Nodes 2 and 3 join node 1 one at a time (concurrent joins race in
    # mnesia). A member that was down rejoins by itself on start.
    for n in "${NODES[@]:1}"; do
        is_member "$n" && continue
        say "joining $(node_name "$n") to $(node_name 1)"
        ctl "$n" stop_app || die "stop_app on $(node_name "$n") failed (log: $LOG)"
        ctl "$n" reset || die "reset of $(node_name "$n") failed (log: $LOG)"
        ctl "$n" join_cluster "$(node_name 1)" || die "$(node_name "$n") could not join $(node_name 1) (log: $LOG)"
        ctl "$n" start_app || die "start_app on $(node_name "$n") failed (log: $LOG)"
    done
    wait_until "all three nodes to run clustered" cluster_ok
    [ "$started" = 0 ] || say "cluster up: $(node_name 1) .. $(node_name 3) on 127.0.0.1:5673-5675 (management :15673-15675)"
}

# Node $1 of ours, or a usage error.
check_node() {
    case "${1:-}" in
        1 | 2 | 3) ;;
        *) die "name a node: 1, 2 or 3" ;;
    esac
}

kill_node() {
    check_node "$1"
    local pid
    pid="$(node_pid "$1")" || die "$(node_name "$1") is not running"
    as_root kill -KILL "$pid"
    wait_until "$(node_name "$1") to die" bash -c "! [ -d /proc/$pid ]"
}

stop_node() {
    check_node "$1"
    local pid
    pid="$(node_pid "$1")" || die "$(node_name "$1") is not running"
    ctl "$1" stop || die "rabbitmqctl stop on $(node_name "$1") failed (log: $LOG)"
    wait_until "$(node_name "$1") to stop" bash -c "! [ -d /proc/$pid ]"
}

status() {
    local n state
    for n in "${NODES[@]}"; do
        if port_open "$(amqp_port "$n")"; then
            state=running
        elif node_pid "$n" >/dev/null; then
            state="app stopped"
        else
            state=down
        fi
        echo "$(node_name "$n") amqp 127.0.0.1:$(amqp_port "$n") management :$(mgmt_port "$n"): $state"
    done
}

case "${1:-}" in
    "") ensure ;;
    start)
        [ -z "${2:-}" ] || check_node "$2"
        ensure
        ;;
    kill) kill_node "${2:-}" ;;
    stop) stop_node "${2:-}" ;;
    status) status ;;
    *) die "usage: $0 [start [N] | stop N | kill N | status]" ;;
esac
