#!/usr/bin/env bash
# Checks and unit-tests the Prometheus alerting rules (deploy/prometheus/alerts.yml)
# with `promtool check rules` and `promtool test rules`. Installs Debian's `prometheus`
# package (which ships promtool) when promtool is missing. Installer output goes to
# stderr; the exit status is promtool's.
set -euo pipefail
cd "$(dirname "$0")/../deploy/prometheus"

if ! command -v promtool >/dev/null; then
    echo "promtool not found: installing Debian's prometheus package" >&2
    timeout 300 apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive timeout 600 \
        apt-get install -y -qq --no-install-recommends prometheus >&2
fi

timeout 120 promtool check rules alerts.yml
timeout 300 promtool test rules alerts.test.yml
