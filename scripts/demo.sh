#!/usr/bin/env bash
# The demo command: installs what the demo needs, builds Trustline, and runs
# the end-to-end demo — an OEM hub and two factory sites on loopback, each
# on its own tokens (`--sites 2`, unless --sites is given; `--sites 1` is
# the single-box line) — keeping every artifact under ./demo-out.
set -euo pipefail
cd "$(dirname "$0")/.."

TRUSTLINE_SKIP_BROWSER=1 scripts/install-deps.sh
rm -rf demo-out
sites=(--sites 2)
for arg in "$@"; do
  # An explicit --sites wins; --postgres keeps the hub and two sites, the
  # hub's store and the first site's ledger in PostgreSQL.
  case "$arg" in --sites|--sites=*) sites=() ;; esac
done
cargo run --release --locked --bin trustline -- demo --dir demo-out "${sites[@]}" "$@"
# One device's FDO 1.1 voucher, checked by the independent implementation
# (`sed -n 1p`, not `head`: head may close the pipe while sort still writes,
# and pipefail would end the script with SIGPIPE).
fdo=$(find demo-out/devices -name '*.fdo-voucher.pem' | sort | sed -n 1p)
[ -n "$fdo" ] || { echo "no fdo voucher under demo-out/devices" >&2; exit 1; }
python3 fdo-check/fdocheck.py verify --voucher "$fdo" >/dev/null
echo "fdo-check: $fdo verifies"
