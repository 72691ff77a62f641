#!/usr/bin/env bash
# Make sure RabbitMQ answers on 127.0.0.1:5672 (AMQP, guest/guest), on
# 127.0.0.1:5671 (AMQP over TLS) and its management API on 127.0.0.1:15672,
# on this machine or on a fresh Debian one: install Debian's rabbitmq-server
# if missing, start the node if stopped, enable the management plugin, and
# wait until every port answers.
#
# TLS, for the tests of amqps:// URLs: a test CA and a server certificate
# (for localhost and 127.0.0.1) are made once in $TLS_DIR (the tests trust
# $TLS_DIR/ca.pem), and the TLS listener is written into
# /etc/rabbitmq/rabbitmq.conf if missing. A node that is already running
# gets the listener started in place (rabbitmqctl eval), not restarted, so
# the tests of others that run meanwhile keep their connections; only if
# that fails is the node restarted.
#
# Idempotent; prints nothing when everything is already fine. On failure it
# prints one line starting with "ensure-rabbitmq:" to stderr and exits 1.
#
# Environment: RABBITMQ_WAIT_SECS (default 120) bounds every wait.
set -euo pipefail

AMQP_PORT=5672
AMQPS_PORT=5671
MGMT_PORT=15672
TLS_DIR="${TASKLANE_TEST_TLS_DIR:-/var/lib/tasklane-test-tls}"
RABBITMQ_CONF=/etc/rabbitmq/rabbitmq.conf
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

tls_files_ok() {
    [ -s "$TLS_DIR/ca.pem" ] && [ -s "$TLS_DIR/server.pem" ] && [ -s "$TLS_DIR/server.key" ] \
        && openssl x509 -checkend 86400 -noout -in "$TLS_DIR/server.pem" >/dev/null 2>&1
}

tls_conf_ok() {
    grep -q '^listeners\.ssl\.' "$RABBITMQ_CONF" 2>/dev/null
}

all_ok() {
    port_open "$AMQP_PORT" && port_open "$AMQPS_PORT" && mgmt_ok && tls_files_ok && tls_conf_ok
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

# The test CA and the broker's certificate, made once (ten years) unless
# they are missing or about to expire.
ensure_tls_files() {
    tls_files_ok && return 0
    command -v openssl >/dev/null 2>&1 || {
        export DEBIAN_FRONTEND=noninteractive
        as_root apt-get install -y -qq openssl </dev/null >>"$LOG" 2>&1 || die "apt-get install openssl failed (log: $LOG)"
    }
    say "making a test CA and a server certificate in $TLS_DIR"
    local tmp
    tmp="$(mktemp -d)"
    (
        cd "$tmp"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=tasklane test CA" \
            -keyout ca.key -out ca.pem \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
        printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile server.ext -out server.pem
    ) >>"$LOG" 2>&1 || die "openssl failed to make the test certificates (log: $LOG)"
    as_root mkdir -p "$TLS_DIR"
    as_root cp "$tmp/ca.pem" "$tmp/server.pem" "$tmp/server.key" "$TLS_DIR/"
    rm -rf "$tmp"
    as_root chmod 0755 "$TLS_DIR"
    as_root chmod 0644 "$TLS_DIR/ca.pem" "$TLS_DIR/server.pem"
    # The broker runs as rabbitmq; nobody else needs the key.
    if id rabbitmq >/dev/null 2>&1; then
        as_root chown rabbitmq "$TLS_DIR/server.key"
    fi
    as_root chmod 0600 "$TLS_DIR/server.key"
    TLS_CERTS_CHANGED=1
}

# Appends the TLS listener to rabbitmq.conf if it has none.
ensure_tls_conf() {
    tls_conf_ok && return 0
    say "adding a TLS listener on 127.0.0.1:$AMQPS_PORT to $RABBITMQ_CONF"
    as_root mkdir -p "$(dirname "$RABBITMQ_CONF")"
    printf '%s\n' \
        "# Added by tasklane's scripts/ensure-rabbitmq.sh: TLS for the tests of amqps://." \
        "listeners.ssl.local = 127.0.0.1:$AMQPS_PORT" \
        "ssl_options.cacertfile = $TLS_DIR/ca.pem" \
        "ssl_options.certfile = $TLS_DIR/server.pem" \
        "ssl_options.keyfile = $TLS_DIR/server.key" \
        "ssl_options.verify = verify_none" \
        "ssl_options.fail_if_no_peer_cert = false" | as_root tee -a "$RABBITMQ_CONF" >/dev/null
}

# Starts the TLS listener on the running node, as the config file would at
# boot, without a restart.
start_tls_listener_in_place() {
    timeout 60 rabbitmqctl -q eval '
        Opts = [{cacertfile, "'"$TLS_DIR"'/ca.pem"}, {certfile, "'"$TLS_DIR"'/server.pem"},
                {keyfile, "'"$TLS_DIR"'/server.key"}, {verify, verify_none}, {fail_if_no_peer_cert, false}],
        ok = application:set_env(rabbit, ssl_options, Opts),
        ok = application:set_env(rabbit, ssl_listeners, [{"127.0.0.1", '"$AMQPS_PORT"'}]),
        rabbit_networking:start_ssl_listener({"127.0.0.1", '"$AMQPS_PORT"'}, rabbit_networking:ensure_ssl(), 10).' \
        </dev/null >>"$LOG" 2>&1
}

TLS_CERTS_CHANGED=0
ensure_tls_files
ensure_tls_conf

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

restart_for_tls=0
if port_open "$AMQPS_PORT"; then
    # A listener running on certificates just replaced must restart.
    restart_for_tls="$TLS_CERTS_CHANGED"
elif ! start_tls_listener_in_place || ! port_open "$AMQPS_PORT"; then
    restart_for_tls=1
fi
if [ "$restart_for_tls" = 1 ]; then
    say "restarting RabbitMQ for its TLS listener (connections of running tests are cut)"
    timeout 60 rabbitmqctl -q stop </dev/null >>"$LOG" 2>&1 || true
    as_root rabbitmq-server -detached </dev/null >>"$LOG" 2>&1 \
        || die "rabbitmq-server -detached failed (log: $LOG)"
    wait_until "the RabbitMQ node to start" app_started
fi
wait_until "127.0.0.1:$AMQPS_PORT (TLS) to answer" port_open "$AMQPS_PORT"

if ! mgmt_ok; then
    timeout 120 rabbitmq-plugins -q enable rabbitmq_management </dev/null >>"$LOG" 2>&1 \
        || die "rabbitmq-plugins enable rabbitmq_management failed (log: $LOG)"
    wait_until "the management API on 127.0.0.1:$MGMT_PORT" mgmt_ok
fi

say "RabbitMQ is up on 127.0.0.1:$AMQP_PORT (TLS on :$AMQPS_PORT, CA $TLS_DIR/ca.pem; management on :$MGMT_PORT)"
