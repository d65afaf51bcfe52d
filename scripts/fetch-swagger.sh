#!/usr/bin/env bash
# moby's API description for the e2e tests' response checks: api/swagger.yaml of Debian's
# docker 20.10 sources (API v1.41), taken from the package without installing it.
set -euo pipefail

out=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
apt-get download -q golang-github-docker-docker-dev 2>/dev/null \
    || { apt-get update -q >/dev/null && apt-get download -q golang-github-docker-docker-dev; }
dpkg-deb --fsys-tarfile golang-github-docker-docker-dev_*.deb \
    | tar -x ./usr/share/gocode/src/github.com/docker/docker/api/swagger.yaml
mkdir -p "$(dirname "$OLDPWD/$out")"
cp usr/share/gocode/src/github.com/docker/docker/api/swagger.yaml "$OLDPWD/$out.tmp"
mv "$OLDPWD/$out.tmp" "$OLDPWD/$out"
