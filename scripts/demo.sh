#!/usr/bin/env bash
# The demo command: installs what the demo needs, builds Trustline, and runs
# the end-to-end factory demo, keeping every artifact under ./demo-out.
set -euo pipefail
cd "$(dirname "$0")/.."

TRUSTLINE_SKIP_BROWSER=1 scripts/install-deps.sh
rm -rf demo-out
cargo run --release --locked --bin trustline -- demo --dir demo-out "$@"
# One device's FDO 1.1 voucher, checked by the independent implementation.
fdo=$(ls demo-out/out/*.fdo-voucher.pem 2>/dev/null | head -n 1 || true)
if [ -z "$fdo" ]; then
  fdo=$(find demo-out -name '*.fdo-voucher.pem' | head -n 1)
fi
python3 fdo-check/fdocheck.py verify --voucher "$fdo" >/dev/null
echo "fdo-check: $fdo verifies"
