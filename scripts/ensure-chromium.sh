#!/usr/bin/env bash
# Makes sure a headless browser is there for the dashboard's browser test
# (io/tests/fleet_dashboard.rs): Debian's `chromium`, installed if missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q chromium
command -v chromium >/dev/null
