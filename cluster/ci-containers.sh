#!/usr/bin/env bash
# The container part of CI (called by .ci/run after `npm test`): installs docker.io and
# docker-compose when missing, starts dockerd when none answers (and stops it again at the end),
# builds the offline images (cluster/build-images.sh), runs `npm run test:chaos` (the chaos suite
# and the docker-compose test), and removes leftover containers by label, by id.
# Runs as root from a checkout where `npm ci` and `npm run build` have run. Takes about 11-14 minutes.
# CHAOS_SEED, CHAOS_DURATION_MS pass through to the chaos suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
export TESTCONTAINERS_RYUK_DISABLED=true TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1 DOCKER_BUILDKIT=0

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
# Prometheus is optional: its image is built (and the compose test checks it) only when installed.
command -v prometheus >/dev/null 2>&1 || [ "${WAL_CI_PROMETHEUS:-1}" = 0 ] || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== ci-containers: installing ${missing[*]}"
  apt-get update -qq
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    required=()
    for p in "${missing[@]}"; do [ "$p" = prometheus ] || required+=("$p"); done
    [ "${#required[@]}" -eq 0 ] || apt-get install -y -qq --no-install-recommends "${required[@]}" >/dev/null
  fi
fi

DOCKERD_PID=""
cleanup() {
  local rc=$?
  echo "== ci-containers: removing leftover containers"
  local ids
  ids="$(docker ps -aq --filter label=org.testcontainers=true 2>/dev/null || true)"
  [ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1 || true
  ids="$(docker ps -aq --filter label=org.wal-recovery.stack=compose 2>/dev/null || true)"
  [ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1 || true
  if [ -n "$DOCKERD_PID" ]; then
    echo "== ci-containers: stopping the dockerd this script started (pid $DOCKERD_PID)"
    kill "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.25; done
  fi
  exit $rc
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
  echo "== ci-containers: starting dockerd (log: /tmp/dockerd-ci.log)"
  dockerd >/tmp/dockerd-ci.log 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.25; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -20 /tmp/dockerd-ci.log; exit 1; }
fi
docker version --format '== docker client {{.Client.Version}}, server {{.Server.Version}}'

echo "== ci-containers: building images"
time cluster/build-images.sh

# At least 5 minutes of faults: a 75 s run is too short to reach states such as a node that
# holds only some segments after repeated outages (issue 8, defect 10).
export CHAOS_DURATION_MS="${CHAOS_DURATION_MS:-300000}"
echo "== ci-containers: npm run test:chaos (faults for ${CHAOS_DURATION_MS} ms)"
time timeout 1200 npm run test:chaos
