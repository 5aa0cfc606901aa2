#!/usr/bin/env bash
# Installs the system packages the tests use when they are missing: a real Redis server,
# Prometheus (for promtool and a real scrape), and Node.js/npm (type-checking Grafana dashboards).
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The Debian packages start their own services; tests start private instances on free ports.
  for svc in redis-server prometheus; do $SUDO systemctl stop "$svc" >/dev/null 2>&1 || true; done
fi
if [ -f deploy/helm/saga/dashboards/package.json ] && [ ! -d deploy/helm/saga/dashboards/node_modules ]; then
  (cd deploy/helm/saga/dashboards && npm ci --no-audit --no-fund --silent)
fi
