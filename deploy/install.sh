#!/usr/bin/env bash
# Installs PrismWatch for the current user on a Debian machine with Rust: `prismwatch` (a
# release build of this checkout) and a nats-server >= 2.10, both in ~/.local/bin, with a hint
# when that folder is not on PATH. Nothing else is needed: the binary carries its default
# config, rules and routing (`prismwatch check-config` from any folder shows what it uses).
#   deploy/install.sh            # then: prismwatch --version; nats-server -js &; prismwatch run
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$HOME/.local/bin"
echo "building and installing prismwatch in $bin (a release build: a few minutes)" >&2
cargo install --quiet --locked --path . --root "$HOME/.local" --force
deploy/install-nats-server.sh >/dev/null
"$bin/prismwatch" --version
case ":$PATH:" in
  *":$bin:"*) ;;
  *) echo "prismwatch and nats-server are in $bin, which is not on your PATH: add  export PATH=\"$bin:\$PATH\"  to your shell profile (~/.bashrc), then open a new shell" >&2 ;;
esac
echo "next: nats-server -js &   (JetStream on), then: prismwatch run   (or: prismwatch demo)" >&2
