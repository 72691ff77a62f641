#!/usr/bin/env bash
# The full test suite: makes sure RabbitMQ runs, then runs every test of the
# workspace in release mode. Extra arguments go to `cargo test`, for example
#   scripts/test.sh -p tasklane-tests -- --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-rabbitmq.sh
exec cargo test --workspace --release "$@"
