#!/usr/bin/env bash
# The demo in one command: a nats-server >= 2.10 if none is installed, a release build, then
# `prismwatch demo` (it uses the configured NATS URL when a server answers there, else starts one).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$(deploy/install-nats-server.sh):$PATH"
export PATH
exec cargo run --release --locked -- demo "$@"
