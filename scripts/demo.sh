#!/usr/bin/env bash
# The demo: makes sure RabbitMQ runs, then runs `tasklane demo` (provision an
# endpoint, submit tasks, collect every result, print a summary). Extra
# arguments go to the demo subcommand; `scripts/demo.sh --help` lists them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-rabbitmq.sh
exec cargo run --release -p tasklane-io --bin tasklane -- demo "$@"
