#!/usr/bin/env bash
# Builds the container images offline, FROM scratch, from what this machine has installed (no
# registry is needed):
#   wal-recovery-node:local        node (the host's binary + the libraries ldd lists), the built app
#                                  (dist/, proto/, production node_modules), healthcheck.mjs, and
#                                  openssl with its openssl.cnf (`wal-recovery certs` runs it)
#   wal-recovery-etcd:local        /usr/bin/etcd (Debian etcd-server)
#   wal-recovery-prometheus:local  /usr/bin/prometheus (Debian prometheus), only when installed
#
# Usage: cluster/build-images.sh [--skip-build]     (--skip-build: use dist/ as it is)
# Environment: WAL_NODE_IMAGE, WAL_ETCD_IMAGE, WAL_PROMETHEUS_IMAGE override the tags;
# NODE_BINARY, ETCD_BINARY, PROMETHEUS_BINARY the binaries; WAL_IMAGES_PROMETHEUS=0 skips
# Prometheus. Uses the legacy builder (DOCKER_BUILDKIT=0), which needs no image to build.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"

NODE_IMAGE="${WAL_NODE_IMAGE:-wal-recovery-node:local}"
ETCD_IMAGE="${WAL_ETCD_IMAGE:-wal-recovery-etcd:local}"
PROMETHEUS_IMAGE="${WAL_PROMETHEUS_IMAGE:-wal-recovery-prometheus:local}"
NODE_BIN="$(readlink -f "${NODE_BINARY:-$(command -v node)}")"
ETCD_BIN="$(readlink -f "${ETCD_BINARY:-/usr/bin/etcd}")"
PROMETHEUS_BIN="${PROMETHEUS_BINARY:-/usr/bin/prometheus}"
export DOCKER_BUILDKIT=0

log() { echo "== build-images: $*" >&2; }

SKIP_BUILD=0
[ "${1:-}" = "--skip-build" ] && SKIP_BUILD=1

docker info >/dev/null 2>&1 || { echo "build-images: no Docker daemon answers (start dockerd first)" >&2; exit 2; }
[ -x "$NODE_BIN" ] || { echo "build-images: no node binary at $NODE_BIN" >&2; exit 2; }
[ -x "$ETCD_BIN" ] || { echo "build-images: no etcd at $ETCD_BIN (apt-get install -y etcd-server)" >&2; exit 2; }

WORK="$(mktemp -d /tmp/wal-images.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

# Copies a binary and every shared library `ldd` lists for it (and the dynamic loader) into a
# root filesystem, at the same paths (symlinks resolved: the copy holds the real file).
copy_with_libs() {
  local binary="$1" rootfs="$2" dest="$3"
  mkdir -p "$rootfs$(dirname "$dest")"
  cp -L "$binary" "$rootfs$dest"
  local lib
  for lib in $(ldd "$binary" 2>/dev/null | grep -oE '/[^ ]+' | sort -u); do
    [ -e "$lib" ] || continue
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
}

# /etc/passwd and /etc/group with root and one service user; /tmp.
base_files() {
  local rootfs="$1" user="$2" uid="$3"
  mkdir -p "$rootfs/etc" "$rootfs/tmp"
  chmod 1777 "$rootfs/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\n%s:x:%s:%s:%s:/nonexistent:/sbin/nologin\n' "$user" "$uid" "$uid" "$user" >"$rootfs/etc/passwd"
  printf 'root:x:0:\n%s:x:%s:\n' "$user" "$uid" >"$rootfs/etc/group"
  printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
}

build() {
  local image="$1" dockerfile="$2" context="$3"
  log "docker build $image"
  docker build -q --label org.wal-recovery.image=local -f "$dockerfile" -t "$image" "$context" >/dev/null
  docker image inspect --format "   $image: {{.Size}} bytes, id {{.Id}}" "$image" >&2
}

# ---- node image --------------------------------------------------------------------------------
if [ "$SKIP_BUILD" = 0 ]; then
  log "npm run build"
  npm run build --silent >/dev/null
fi
[ -f dist/cli/main.js ] || { echo "build-images: dist/cli/main.js missing (npm run build)" >&2; exit 2; }

CTX="$WORK/node"
ROOT="$CTX/rootfs"
mkdir -p "$ROOT/app/cluster" "$ROOT/usr/local/bin" "$CTX/data"
base_files "$ROOT" walrecovery 10001
copy_with_libs "$NODE_BIN" "$ROOT" /usr/local/bin/node
copy_with_libs "$(readlink -f /usr/bin/env)" "$ROOT" /usr/bin/env  # the bin's "#!/usr/bin/env node"
# openssl for the certs step of docker-compose.yml; `openssl req` reads OPENSSLDIR/openssl.cnf.
OPENSSL_BIN="$(command -v openssl || true)"
[ -n "$OPENSSL_BIN" ] || { echo "build-images: no openssl (apt-get install -y openssl): docker-compose's certs step needs it" >&2; exit 2; }
copy_with_libs "$(readlink -f "$OPENSSL_BIN")" "$ROOT" /usr/bin/openssl
OPENSSL_DIR="$(openssl version -d | sed -E 's/^OPENSSLDIR: "(.*)"$/\1/')"
mkdir -p "$ROOT$OPENSSL_DIR"
cp -L "$OPENSSL_DIR/openssl.cnf" "$ROOT$OPENSSL_DIR/openssl.cnf"
log "app and production node_modules"
cp -a dist proto package.json package-lock.json "$ROOT/app/"
cp cluster/healthcheck.mjs "$ROOT/app/cluster/"
cp -a node_modules "$ROOT/app/node_modules"
(cd "$ROOT/app" && npm prune --omit=dev --offline --no-audit --no-fund --ignore-scripts >/dev/null 2>&1) \
  || { echo "build-images: npm prune --omit=dev failed" >&2; exit 1; }
rm -rf "$ROOT/app/node_modules/.cache" "$ROOT/app/node_modules/.vite" "$ROOT/app/node_modules/.vite-temp"
find "$ROOT/app/node_modules" -mindepth 1 -maxdepth 2 -type d -empty -delete
find "$ROOT/app/dist" -name '*.map' -delete
ln -s /app/dist/cli/main.js "$ROOT/usr/local/bin/wal-recovery"
chmod 755 "$ROOT/app/dist/cli/main.js"
cp cluster/scratch/node.Dockerfile "$CTX/Dockerfile"
build "$NODE_IMAGE" "$CTX/Dockerfile" "$CTX"

# ---- etcd image --------------------------------------------------------------------------------
CTX="$WORK/etcd"
ROOT="$CTX/rootfs"
mkdir -p "$CTX/data"
base_files "$ROOT" etcd 10002
copy_with_libs "$ETCD_BIN" "$ROOT" /usr/bin/etcd
cp cluster/scratch/etcd.Dockerfile "$CTX/Dockerfile"
build "$ETCD_IMAGE" "$CTX/Dockerfile" "$CTX"

# ---- Prometheus image (optional) ---------------------------------------------------------------
if [ "${WAL_IMAGES_PROMETHEUS:-1}" != 0 ] && [ -x "$PROMETHEUS_BIN" ]; then
  CTX="$WORK/prometheus"
  ROOT="$CTX/rootfs"
  mkdir -p "$CTX/data" "$ROOT/etc/prometheus"
  base_files "$ROOT" prometheus 10003
  copy_with_libs "$(readlink -f "$PROMETHEUS_BIN")" "$ROOT" /usr/bin/prometheus
  cp cluster/prometheus.yml cluster/alerts.yml "$ROOT/etc/prometheus/"
  cp cluster/scratch/prometheus.Dockerfile "$CTX/Dockerfile"
  build "$PROMETHEUS_IMAGE" "$CTX/Dockerfile" "$CTX"
else
  log "no $PROMETHEUS_BIN (apt-get install -y --no-install-recommends prometheus): Prometheus image skipped"
fi
log "done"
