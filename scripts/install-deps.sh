#!/usr/bin/env bash
# Installs what Trustline's demo and tests need beyond the Rust toolchain,
# from the OS packages, only when missing: SoftHSM2 (the PKCS#11 token),
# PostgreSQL's server binaries (the tests, bench and demo start a throwaway
# cluster of their own; no server is left running),
# OpenSSL (to check every certificate we issue), Chromium (to render the
# audit report in a test); Python 3 with the `cryptography` and `cbor2`
# packages (the reference device in reference-device/, the independent FDO
# voucher checker in fdo-check/).
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
pg_found=""
for initdb in /usr/lib/postgresql/*/bin/initdb /usr/pgsql-*/bin/initdb; do
  [ -x "$initdb" ] && pg_found="$initdb"
done
[ -n "$pg_found" ] || command -v initdb >/dev/null 2>&1 || [ -n "${TRUSTLINE_PG_BIN:-}" ] || need+=(postgresql)
if [ "${TRUSTLINE_SKIP_BROWSER:-0}" != 1 ]; then
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
fi
command -v python3 >/dev/null 2>&1 || need+=(python3)

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# Python packages, each only when `import` fails: pip when python3 has it,
# else the OS package. `cryptography` for the reference device
# (reference-device/) and the FDO checker (fdo-check/); `cbor2` for the FDO
# checker.
python_module() {
  local module=$1 pip_name=$2 apt_name=$3
  command -v python3 >/dev/null 2>&1 || return 0
  python3 -c "import $module" >/dev/null 2>&1 && return 0
  if python3 -m pip --version >/dev/null 2>&1; then
    echo "installing: $pip_name (pip)" >&2
    python3 -m pip install --quiet "$pip_name" && return 0
  fi
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing: $apt_name" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y --no-install-recommends "$apt_name" >/dev/null \
      || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "$apt_name" >/dev/null; }
    return
  fi
  echo "error: python3 cannot import $module; install it (python3 -m pip install $pip_name)" >&2
  return 2
}

python_modules() {
  python_module cryptography cryptography python3-cryptography
  python_module cbor2 cbor2 python3-cbor2
}

if [ ${#need[@]} -eq 0 ]; then
  python_modules
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
python_modules
