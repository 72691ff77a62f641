#!/usr/bin/env bash
# The full test suite: makes sure RabbitMQ runs and Chromium is installed
# (the dashboard's browser test), then runs every test of the
# workspace in release mode, every test binary even after a failure (so one
# run reports every failing test). Extra arguments go to `cargo test`; naming a
# package narrows the run to it instead of the whole workspace:
#   scripts/test.sh -p tasklane-tests -- --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-rabbitmq.sh
bash scripts/ensure-chromium.sh

scope=(--workspace)
for arg in "$@"; do
    [ "$arg" = "--" ] && break
    case "$arg" in
        -p | --package | --package=* | -p?*) scope=() ;;
    esac
done
exec cargo test "${scope[@]}" --release --no-fail-fast "$@"
