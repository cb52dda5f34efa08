#!/usr/bin/env bash
# Install what edgefabric needs, idempotently. Each step is skipped when already done.
#
#   scripts/bootstrap.sh venv        Python venv from requirements.txt (one resolution)
#   scripts/bootstrap.sh contracts   solc-js + anvil from the npm registry (npm ci)
#   scripts/bootstrap.sh pdns        PowerDNS + sqlite backend (+ shellcheck) from Debian packages
#   scripts/bootstrap.sh k8s         etcd-server from Debian packages (local Kubernetes control planes)
#   scripts/bootstrap.sh mqtt        mosquitto + mosquitto-clients from Debian packages (data-flow bridges)
#   scripts/bootstrap.sh all
#
# Expensive results live in ${EDGEFABRIC_CACHE:-~/.cache/edgefabric}, outside the clone,
# so a fresh clone on the same machine (CI) reuses them; `venv` is a symlink into it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${EDGEFABRIC_CACHE:-$HOME/.cache/edgefabric}"
PYTHON="${PYTHON:-python3}"
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

venv() {
  local key
  key="$( (cat "$ROOT/requirements.txt"; "$PYTHON" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)"
  local target="$CACHE/venv-$key"
  if [ ! -x "$target/bin/python" ] || [ ! -f "$target/.complete" ]; then
    say "creating Python venv ($target); first time takes a few minutes"
    rm -rf "$target"
    mkdir -p "$CACHE"
    "$PYTHON" -m venv "$target"
    "$target/bin/pip" install --quiet --upgrade pip
    # One resolution for everything: pulumi-policy pins protobuf 5.29.x.
    "$target/bin/pip" install --quiet --progress-bar off -r "$ROOT/requirements.txt"
    touch "$target/.complete"
    # Venvs of older requirements are dead weight (hundreds of MB each): drop them.
    find "$CACHE" -maxdepth 1 -name 'venv-*' ! -path "$target" -exec rm -rf {} +
  fi
  # The project itself, editable and without dependencies (they came in one resolution
  # above). The venv is shared by every clone on this machine, so it is pointed at this
  # clone, and reinstalled when pyproject.toml changes (packages, console scripts).
  local stamp
  stamp="$ROOT $(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
  if [ "$(cat "$target/.edgefabric-install" 2>/dev/null)" != "$stamp" ]; then
    say "installing edgefabric (editable) from $ROOT"
    "$target/bin/pip" install --quiet --no-deps --no-build-isolation -e "$ROOT"
    echo "$stamp" > "$target/.edgefabric-install"
  fi
  if [ "$(readlink "$ROOT/venv" 2>/dev/null)" != "$target" ]; then
    if [ -e "$ROOT/venv" ] && [ ! -L "$ROOT/venv" ]; then
      say "replacing the plain venv/ folder with a link to the cached venv"
      rm -rf "$ROOT/venv"
    fi
    ln -sfn "$target" "$ROOT/venv"
  fi
}

contracts() {
  if [ ! -f "$ROOT/contracts/node_modules/.package-lock.json" ] \
     || [ "$ROOT/contracts/package-lock.json" -nt "$ROOT/contracts/node_modules/.package-lock.json" ]; then
    say "installing solc-js and anvil from the npm registry (npm ci)"
    (cd "$ROOT/contracts" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# Debian packages, installed together with one `apt-get update`. policy-rc.d (exit 101) keeps
# apt from starting system-wide daemons (pdns on :53, etcd on :2379, mosquitto on :1883):
# the tests and local-env start their own on loopback ports.
apt_install() {
  [ "$#" -gt 0 ] || return 0
  say "installing $* from Debian packages"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"   # a laptop: apt needs root
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null && $sudo chmod +x /usr/sbin/policy-rc.d
  $sudo apt-get install -y -qq "$@" >/dev/null
  $sudo rm -f /usr/sbin/policy-rc.d
}

pdns() {
  # PowerDNS for the DNS tests and the local stack; shellcheck for actionlint's run: checks.
  local missing=()
  command -v pdns_server >/dev/null 2>&1 || [ -x /usr/sbin/pdns_server ] || missing+=(pdns-server)
  ls /usr/lib/*/pdns/libgsqlite3backend.so >/dev/null 2>&1 || missing+=(pdns-backend-sqlite3)
  command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
  command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
  apt_install "${missing[@]}"
}

k8s() {
  # Debian's etcd for the local Kubernetes control planes (devenv/kubernetes.py); the Kubernetes
  # binaries themselves are built from Go modules by tools/kubernetes/build.sh (cached).
  if ! command -v etcd >/dev/null 2>&1 && [ ! -x /usr/bin/etcd ]; then
    apt_install etcd-server
  fi
}

mqtt() {
  # Mosquitto 2 for the data-flow bridges (issue: MQTT edge -> region -> core); the tests run
  # the broker configs the components generate.
  local missing=()
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
  command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
  # systemd-analyze checks the native sites' units (the broker's among them) as systemd reads them.
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
  apt_install "${missing[@]}"
}

case "${1:-all}" in
  venv) venv ;;
  contracts) contracts ;;
  pdns) pdns ;;
  k8s) k8s ;;
  mqtt) mqtt ;;
  all) venv; contracts; pdns; k8s; mqtt ;;
  *) echo "usage: $0 venv|contracts|pdns|k8s|mqtt|all" >&2; exit 2 ;;
esac
