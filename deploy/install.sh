#!/usr/bin/env bash
# Installs PrismWatch for the current user on a Debian machine with Rust: `prismwatch` (a
# release build of this checkout) and a nats-server >= 2.10, both in ~/.local/bin, with a hint
# when that folder is not on PATH. Nothing else is needed: the binary carries its default
# config, rules and routing (`prismwatch check-config` from any folder shows what it uses).
#   deploy/install.sh            # then: prismwatch --version; nats-server -js &; prismwatch run
# PRISMWATCH_INSTALL_PROFILE=dev installs a debug build instead: CI does, to check this script and
# the installed binary without a second full build of every dependency (the release build).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$HOME/.local/bin"
profile="${PRISMWATCH_INSTALL_PROFILE:-release}"
echo "building and installing prismwatch in $bin (a $profile build: a few minutes)" >&2
cargo install --quiet --locked --path . --root "$HOME/.local" --force --profile "$profile"
deploy/install-nats-server.sh >/dev/null
"$bin/prismwatch" --version
case ":$PATH:" in
  *":$bin:"*) ;;
  *) echo "prismwatch and nats-server are in $bin, which is not on your PATH: add  export PATH=\"$bin:\$PATH\"  to your shell profile (~/.bashrc), then open a new shell" >&2 ;;
esac
echo "next: nats-server -js &   (JetStream on), then: prismwatch run   (or: prismwatch demo)" >&2
