#!/usr/bin/env bash
# Make sure RabbitMQ answers on 127.0.0.1:5672 (AMQP, guest/guest) and its
# management API on 127.0.0.1:15672, on this machine or on a fresh Debian one:
# install Debian's rabbitmq-server if missing, start the node if stopped,
# enable the management plugin, and wait until both ports answer.
#
# Idempotent; prints nothing when everything is already fine. On failure it
# prints one line starting with "ensure-rabbitmq:" to stderr and exits 1.
#
# Environment: RABBITMQ_WAIT_SECS (default 120) bounds every wait.
set -euo pipefail

AMQP_PORT=5672
MGMT_PORT=15672
WAIT_SECS="${RABBITMQ_WAIT_SECS:-120}"
LOG="${TMPDIR:-/tmp}/ensure-rabbitmq.log"
# "guest:guest", base64.
GUEST_AUTH="Z3Vlc3Q6Z3Vlc3Q="

die() {
    echo "ensure-rabbitmq: $*" >&2
    exit 1
}

say() {
    echo "ensure-rabbitmq: $*" >&2
}

# Runs a command as root: directly when we are root, otherwise through sudo.
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

# True when the management API answers 200 to guest/guest. Plain bash, so it
# works without curl on a minimal machine.
mgmt_ok() {
    timeout 5 bash -c '
        exec 3<>/dev/tcp/127.0.0.1/'"$MGMT_PORT"' || exit 1
        printf "GET /api/overview HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Basic '"$GUEST_AUTH"'\r\n\r\n" >&3
        IFS= read -r status <&3 || exit 1
        case "$status" in "HTTP/1."?" 200"*) exit 0 ;; *) exit 1 ;; esac
    ' 2>/dev/null
}

all_ok() {
    port_open "$AMQP_PORT" && mgmt_ok
}

# Waits until "$@" succeeds or WAIT_SECS pass since the wait began.
wait_until() {
    local what="$1"
    shift
    local deadline=$((SECONDS + WAIT_SECS))
    until "$@"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            die "timed out after ${WAIT_SECS}s waiting for $what (log: $LOG)"
        fi
        sleep 1
    done
}

# Fast path: nothing to do, say nothing.
if all_ok; then
    exit 0
fi

: >"$LOG" 2>/dev/null || LOG=/dev/null

if ! command -v rabbitmqctl >/dev/null 2>&1; then
    say "rabbitmq-server not installed; installing it with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >>"$LOG" 2>&1 || die "apt-get update failed (log: $LOG)"
    as_root apt-get install -y -qq rabbitmq-server </dev/null >>"$LOG" 2>&1 \
        || die "apt-get install rabbitmq-server failed (log: $LOG)"
    command -v rabbitmqctl >/dev/null 2>&1 || die "rabbitmqctl still missing after install"
fi

node_up() {
    timeout 30 rabbitmqctl -q ping </dev/null >>"$LOG" 2>&1
}

if node_up; then
    # The node runs but AMQP is closed: its app was stopped (rabbitmqctl
    # stop_app), and await_startup would wait for it forever. Starting an app
    # that is already booting is harmless.
    if ! port_open "$AMQP_PORT"; then
        say "starting the RabbitMQ app on the running node"
        timeout "$WAIT_SECS" rabbitmqctl -q start_app </dev/null >>"$LOG" 2>&1 || true
    fi
else
    say "starting rabbitmq-server"
    # Detached, with every standard stream away from ours, so nothing that
    # reads our output (CI) waits on the broker's processes.
    as_root rabbitmq-server -detached </dev/null >>"$LOG" 2>&1 \
        || die "rabbitmq-server -detached failed (log: $LOG)"
fi

app_started() {
    timeout 30 rabbitmqctl -q await_startup </dev/null >>"$LOG" 2>&1
}
wait_until "the RabbitMQ node to start" app_started
wait_until "127.0.0.1:$AMQP_PORT to answer" port_open "$AMQP_PORT"

if ! mgmt_ok; then
    timeout 120 rabbitmq-plugins -q enable rabbitmq_management </dev/null >>"$LOG" 2>&1 \
        || die "rabbitmq-plugins enable rabbitmq_management failed (log: $LOG)"
    wait_until "the management API on 127.0.0.1:$MGMT_PORT" mgmt_ok
fi

say "RabbitMQ is up on 127.0.0.1:$AMQP_PORT (management on :$MGMT_PORT)"
