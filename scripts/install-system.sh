#!/usr/bin/env bash
# Install the Debian packages berth needs, if any are missing (idempotent).
set -euo pipefail

PACKAGES=(busybox-static tar gzip xz-utils bzip2 util-linux procps containerd runc tini nftables iptables docker-compose)
# unpigz: gzip layers decompressed in a process beside berthd, dockerd's way, when
# BERTH_GZIP_DECOMPRESS=unpigz asks for it (src/berth/archive/_compress.py), and its tests
PACKAGES+=(pigz)
# The distribution tests' registries (tests/e2e/registries.py): distribution 2.8, skopeo to put
# images in, htpasswd -B for bcrypt Basic auth, openssl for the token server's signing key.
PACKAGES+=(docker-registry skopeo apache2-utils openssl)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "berth needs these Debian packages: ${missing[*]}" >&2
    echo "run 'make install' as root (berthd itself must run as root)" >&2
    exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
