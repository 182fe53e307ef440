#!/usr/bin/env bash
# Installs what Trustline's demo and tests need beyond the Rust toolchain,
# from the OS packages, only when missing: SoftHSM2 (the PKCS#11 token),
# OpenSSL (to check every certificate we issue), Chromium (to render the
# audit report in a test).
set -euo pipefail

need=()
softhsm_found=""
for lib in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
           /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so /usr/lib64/pkcs11/libsofthsm2.so \
           /usr/lib/pkcs11/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
  [ -e "$lib" ] && softhsm_found="$lib"
done
[ -n "$softhsm_found" ] || need+=(softhsm2)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ "${TRUSTLINE_SKIP_BROWSER:-0}" != 1 ]; then
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
fi
[ ${#need[@]} -eq 0 ] && exit 0

echo "installing: ${need[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
elif command -v dnf >/dev/null 2>&1; then
  $sudo dnf install -y "${need[@]}"
else
  echo "error: cannot install ${need[*]}: no apt-get or dnf; install them with your package manager" >&2
  exit 2
fi
