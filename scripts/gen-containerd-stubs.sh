#!/usr/bin/env bash
# Generate Python gRPC stubs for containerd's API from Debian's own .proto files.
#
#   scripts/gen-containerd-stubs.sh PYTHON OUT_ROOT
#
# The protos come from the -dev packages matching the installed containerd
# (fetched with `apt-get download`, unpacked, never installed: installing them
# would pull in ~100 packages).  Go import paths are rewritten to the Python
# package berth.runtime._api.  The output is git-ignored; `make install` runs this.
set -euo pipefail

PY=${1:?python interpreter}
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # keep the venv path
OUT=$(realpath -m "${2:?output root, e.g. src}")
PKG=berth/runtime/_api
DEBS=(golang-github-containerd-containerd-dev golang-github-gogo-protobuf-dev golang-github-containerd-cgroups-dev)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

src=/usr/share/gocode/src
if [ ! -f "$src/github.com/containerd/containerd/api/services/tasks/v1/tasks.proto" ] \
    || [ ! -f "$src/github.com/gogo/protobuf/gogoproto/gogo.proto" ] \
    || [ ! -f "$src/github.com/containerd/cgroups/stats/v1/metrics.proto" ]; then
    if ! (cd "$work" && apt-get download -q -o APT::Sandbox::User=root "${DEBS[@]}" >/dev/null 2>&1); then
        apt-get update -q >/dev/null   # the package lists may be empty on a fresh machine
        (cd "$work" && apt-get download -q -o APT::Sandbox::User=root "${DEBS[@]}" >/dev/null)
    fi
    for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
    src=$work/root/usr/share/gocode/src
fi

stage=$work/stage
protos=()
stage_proto() {  # stage_proto SOURCE DEST-RELATIVE
    mkdir -p "$stage/$(dirname "$2")"
    sed -e "s#\"github.com/containerd/containerd/#\"$PKG/#g" \
        -e "s#\"gogoproto/gogo.proto\"#\"$PKG/gogoproto/gogo.proto\"#g" \
        -e "s#\"github.com/containerd/cgroups/#\"$PKG/cgroups/#g" \
        "$1" > "$stage/$2"
    protos+=("$2")
}

ctrd=$src/github.com/containerd/containerd
while IFS= read -r f; do
    stage_proto "$ctrd/$f" "$PKG/$f"
done < <(cd "$ctrd" && find api protobuf runtime/v2/runc/options -name '*.proto' | grep -v introspection | sort)
stage_proto "$src/github.com/gogo/protobuf/gogoproto/gogo.proto" "$PKG/gogoproto/gogo.proto"
stage_proto "$src/github.com/containerd/cgroups/stats/v1/metrics.proto" "$PKG/cgroups/stats/v1/metrics.proto"

wkt=$("$PY" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
rm -rf "${OUT:?}/$PKG"
mkdir -p "$OUT"
(cd "$stage" && "$PY" -m grpc_tools.protoc -I. -I"$wkt" \
    --python_out="$OUT" --grpc_python_out="$OUT" "${protos[@]}" 2> >(grep -v 'is unused' >&2 || true))
find "$OUT/$PKG" -type d -exec sh -c 'touch "$1/__init__.py"' _ {} \;
echo "generated $(find "$OUT/$PKG" -name '*_pb2*.py' | wc -l) modules in $OUT/$PKG"
