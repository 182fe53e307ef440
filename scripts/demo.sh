#!/usr/bin/env bash
# The demo command: installs what the demo needs, builds Trustline, and runs
# the end-to-end factory demo, keeping every artifact under ./demo-out.
set -euo pipefail
cd "$(dirname "$0")/.."

TRUSTLINE_SKIP_BROWSER=1 scripts/install-deps.sh
rm -rf demo-out
cargo run --release --locked --bin trustline -- demo --dir demo-out "$@"
