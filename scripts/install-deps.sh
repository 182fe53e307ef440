#!/usr/bin/env bash
# Installs what Trustline's demo and tests need beyond the Rust toolchain,
# from the OS packages, only when missing: SoftHSM2 (the PKCS#11 token),
# OpenSSL (to check every certificate we issue), Chromium (to render the
# audit report in a test); Python 3 with the `cryptography` package (the
# reference device in reference-device/).
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
command -v python3 >/dev/null 2>&1 || need+=(python3)

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# The reference device needs `cryptography`: pip when python3 has it, else
# the OS package (python3-cryptography).
python_cryptography() {
  command -v python3 >/dev/null 2>&1 || return 0
  python3 -c 'import cryptography' >/dev/null 2>&1 && return 0
  if python3 -m pip --version >/dev/null 2>&1; then
    echo "installing: cryptography (pip)" >&2
    python3 -m pip install --quiet cryptography && return 0
  fi
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing: python3-cryptography" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y --no-install-recommends python3-cryptography >/dev/null \
      || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends python3-cryptography >/dev/null; }
    return
  fi
  echo "error: python3 cannot import cryptography; install it (python3 -m pip install cryptography)" >&2
  return 2
}

if [ ${#need[@]} -eq 0 ]; then
  python_cryptography
  exit
fi

echo "installing: ${need[*]}" >&2
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
python_cryptography
