#!/usr/bin/env bash
# The project's test environment: real PostgreSQL, Redis, MinIO, etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok nodes, helm and kubectl, as plain processes on
# 127.0.0.1 that this script owns.
#
#   test-env.sh up       build what is missing (cached outside the repo), start what is not running
#   test-env.sh down     stop what this script started (by the pids it recorded)
#   test-env.sh status   one line per component
#   test-env.sh env      shell exports for the tests (eval "$(test-env.sh env)")
#   test-env.sh build    only build and cache the binaries
#
# Settings (environment): AETHEX_TEST_ENV_CACHE (binaries, Go caches; default ~/.cache/aethex/test-env),
# AETHEX_TEST_ENV_RUN (data, pids, logs; default /tmp/aethex-test-env), AETHEX_TEST_ENV_PORT_BASE
# (default 22000, below Linux's ephemeral range 32768–60999, so that no outgoing connection can
# hold a component's port; components use fixed offsets from it).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.sh
source "$HERE/versions.sh"

CACHE=${AETHEX_TEST_ENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aethex/test-env}
RUN=${AETHEX_TEST_ENV_RUN:-/tmp/aethex-test-env}
LOGS=$RUN/logs
PORT_BASE=${AETHEX_TEST_ENV_PORT_BASE:-22000}
[[ $PORT_BASE =~ ^[0-9]+$ ]] && ((PORT_BASE >= 1024 && PORT_BASE <= 65000)) ||
  { echo "test-env: AETHEX_TEST_ENV_PORT_BASE must be an integer from 1024 to 65000, got '$PORT_BASE'" >&2; exit 2; }

PG_PORT=$((PORT_BASE + 32))
REDIS_PORT=$((PORT_BASE + 79))
MINIO_PORT=$((PORT_BASE + 90))
MINIO_CONSOLE_PORT=$((PORT_BASE + 91))
ETCD_PORT=$((PORT_BASE + 379))
ETCD_PEER_PORT=$((PORT_BASE + 380))
APISERVER_PORT=$((PORT_BASE + 443))
CM_PORT=$((PORT_BASE + 257))
SCHED_PORT=$((PORT_BASE + 259))
KWOK_PORT=$((PORT_BASE + 247))
AGONES_GRPC_PORT=$((PORT_BASE + 357))
AGONES_HTTP_PORT=$((PORT_BASE + 358))

MINIO_USER=aethex-test
MINIO_PASSWORD=aethex-test-secret
KWOK_NODES=3

mkdir -p "$CACHE" "$RUN" "$LOGS" "$RUN/pids"

log() { echo "test-env: $*" >&2; }
die() { echo "test-env: error: $*" >&2; exit 1; }

# shellcheck source=build.sh
source "$HERE/build.sh"

ETCD_BIN=$(bin_dir etcd "$ETCD_VERSION")/etcd
KUBE_DIR=$(bin_dir kube "$KUBE_VERSION")
KWOK_BIN=$(bin_dir kwok "$KWOK_VERSION")/kwok
MINIO_BIN=$(bin_dir minio "$MINIO_VERSION")/minio
HK_DIR=$(bin_dir helm-kubectl "${KUBECTL_LAYER_PACKAGE##*@}")
HELM_BIN=$HK_DIR/helm
KUBECTL_BIN=$HK_DIR/kubectl
AGONES_BIN=$(bin_dir agones-sdk-server "$AGONES_VERSION")/sdk-server
PG_BIN=/usr/lib/postgresql/15/bin
PKI=$RUN/pki
ADMIN_KUBECONFIG=$RUN/kube/admin.kubeconfig

# --- process bookkeeping ----------------------------------------------------------------------

pid_of() { local f="$RUN/pids/$1.pid"; [[ -f $f ]] && cat "$f" || true; }
alive() { local p; p=$(pid_of "$1"); [[ -n $p ]] && kill -0 "$p" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# port_listened <port>: something listens on it. Asks the kernel's socket table (ss) rather than
# connecting: the ports sit inside Linux's ephemeral range (32768-60999), where a connect to a port
# nobody listens on can, rarely, pick that same port as its source and connect to itself.
port_listened() {
  if command -v ss >/dev/null 2>&1; then
    [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]
  else
    port_open "$1"
  fi
}

# require_port_free <component> <port>: fails fast when something this script did not start
# already listens on a port the component needs.
require_port_free() {
  if port_listened "$2"; then
    die "port $2 needed by $1 is taken by another process; stop it or set AETHEX_TEST_ENV_PORT_BASE"
  fi
}

# spawn <component> <command...>: starts a long-running process detached from this shell, its
# output in $LOGS/<component>.log and its pid in $RUN/pids/<component>.pid.
spawn() {
  local name=$1
  shift
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/pids/$name.pid"
}

# wait_for <component> <seconds> <check command...>: polls until the check passes, the process
# dies, or time runs out; the failure names the component and its log.
# await_ready <component> <seconds> <check...>: returns 0 once the check passes, 1 if the
# component's process exits first; dies when it is not ready in time.
await_ready() {
  local name=$1 secs=$2
  shift 2
  local deadline=$((SECONDS + secs))
  while ! "$@" >/dev/null 2>&1; do
    if [[ -f $RUN/pids/$name.pid ]] && ! alive "$name"; then
      return 1
    fi
    ((SECONDS < deadline)) || die "$name did not become ready within ${secs}s; see $LOGS/$name.log"
    sleep 0.3
  done
}

wait_for() {
  await_ready "$@" || die "$1 exited during start-up; see $LOGS/$1.log"
}

stop_component() {
  local name=$1 p
  p=$(pid_of "$name")
  [[ -n $p ]] || return 0
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
  fi
  rm -f "$RUN/pids/$name.pid"
}

check_disk() {
  local need_mb=$1 dir=$2 avail
  avail=$(df -Pm "$dir" | awk 'NR==2 {print $4}')
  ((avail >= need_mb)) || die "only ${avail} MB free under $dir; the test environment needs ${need_mb} MB"
}

# --- PostgreSQL -------------------------------------------------------------------------------

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }
as_postgres() {
  if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi
}
start_postgres() {
  local dir=$RUN/postgres
  if [[ -f $dir/data/postmaster.pid ]] && pg_ready; then return 0; fi
  require_port_free postgres "$PG_PORT"
  mkdir -p "$dir"
  ((EUID == 0)) && chown postgres: "$dir" "$LOGS" && touch "$LOGS/postgres.log" && chown postgres: "$LOGS/postgres.log"
  if [[ ! -f $dir/data/PG_VERSION ]]; then
    rm -rf "$dir/data"
    as_postgres "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >>"$LOGS/postgres.log" 2>&1 ||
      die "postgres initdb failed; see $LOGS/postgres.log"
  fi
  # Tests create and drop many schemas and databases; durability is not what they measure.
  as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$LOGS/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null || die "postgres did not start; see $LOGS/postgres.log"
  head -1 "$dir/data/postmaster.pid" >"$RUN/pids/postgres.pid"
  wait_for postgres 30 pg_ready
}
stop_postgres() {
  if [[ -f $RUN/postgres/data/postmaster.pid ]]; then
    as_postgres "$PG_BIN/pg_ctl" -D "$RUN/postgres/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -f "$RUN/pids/postgres.pid"
}

# --- Redis ------------------------------------------------------------------------------------

redis_ready() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }
start_redis() {
  if alive redis && redis_ready; then return 0; fi
  require_port_free redis "$REDIS_PORT"
  mkdir -p "$RUN/redis"
  spawn redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$RUN/redis" --daemonize no
  wait_for redis 20 redis_ready
}

# --- MinIO ------------------------------------------------------------------------------------

# The cluster check passes only once the erasure set has write quorum; /ready passes earlier.
minio_ready() { curl -sf -o /dev/null "http://127.0.0.1:$MINIO_PORT/minio/health/cluster"; }
start_minio() {
  if alive minio && minio_ready; then return 0; fi
  local attempt logged
  for attempt in 1 2 3; do
    require_port_free minio "$MINIO_PORT"
    require_port_free minio-console "$MINIO_CONSOLE_PORT"
    mkdir -p "$RUN"/minio/d{1,2,3,4}
    logged=$(wc -l 2>/dev/null <"$LOGS/minio.log" || echo 0)
    # Four drives give the erasure-coded layout that bucket versioning needs. MINIO_CI_CD lets them
    # live on the root disk, which MinIO otherwise refuses as "drive not found" (CI=true does the same).
    spawn minio env MINIO_ROOT_USER="$MINIO_USER" MINIO_ROOT_PASSWORD="$MINIO_PASSWORD" \
      MINIO_BROWSER=off MINIO_UPDATE=off MINIO_CI_CD=1 \
      "$MINIO_BIN" server --address "127.0.0.1:$MINIO_PORT" --console-address "127.0.0.1:$MINIO_CONSOLE_PORT" \
      "$RUN/minio/d{1...4}"
    await_ready minio 60 minio_ready && return 0
    # With a base in Linux's ephemeral range an outgoing connection can hold the port for a
    # moment, and MinIO then refuses to start ("port is already in use", seen once on 2026-12-05). Again.
    if ((attempt < 3)) && tail -n +"$((logged + 1))" "$LOGS/minio.log" | grep -q 'already in use'; then
      echo "test-env: minio's port was in use for a moment; starting it again" >&2
      sleep 1
      continue
    fi
    die "minio exited during start-up; see $LOGS/minio.log"
  done
}

# --- PKI and kubeconfigs ------------------------------------------------------------------------

make_cert() { # name cn org [san]
  local name=$1 cn=$2 org=$3 san=${4:-}
  [[ -f $PKI/$name.crt ]] && return 0
  local subj="/CN=$cn"
  [[ -n $org ]] && subj="/O=$org$subj"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  local ext="$PKI/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n $san ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

write_kubeconfig() { # file user cert-name
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: aethex-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    client-certificate: $PKI/$3.crt
    client-key: $PKI/$3.key
contexts:
- name: aethex-test
  context: { cluster: aethex-test, user: $2 }
current-context: aethex-test
EOF
}

make_pki() {
  mkdir -p "$PKI" "$RUN/kube"
  if [[ ! -f $PKI/ca.crt ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 3650 \
      -subj "/CN=aethex-test-ca" 2>/dev/null
  fi
  [[ -f $PKI/sa.key ]] || {
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  }
  make_cert apiserver kube-apiserver "" "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  make_cert admin admin system:masters
  make_cert controller-manager system:kube-controller-manager ""
  make_cert scheduler system:kube-scheduler ""
  # kwok acts for the simulated kubelets; it is test infrastructure, not the product under test.
  make_cert kwok kwok system:masters
  write_kubeconfig "$ADMIN_KUBECONFIG" admin admin
  write_kubeconfig "$RUN/kube/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  write_kubeconfig "$RUN/kube/scheduler.kubeconfig" system:kube-scheduler scheduler
  write_kubeconfig "$RUN/kube/kwok.kubeconfig" kwok kwok
}

# --- etcd and the Kubernetes control plane --------------------------------------------------------

etcd_ready() { curl -sf "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
start_etcd() {
  if alive etcd && etcd_ready; then return 0; fi
  require_port_free etcd "$ETCD_PORT"
  require_port_free etcd-peer "$ETCD_PEER_PORT"
  mkdir -p "$RUN/etcd"
  # The member's peer URL is stored in its data: a directory per peer port.
  spawn etcd "$ETCD_BIN" --name aethex-test --data-dir "$RUN/etcd/data-$ETCD_PEER_PORT" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "aethex-test=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --quota-backend-bytes=4294967296 --log-level=warn
  wait_for etcd 30 etcd_ready
}

kubectl_admin() { "$KUBECTL_BIN" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }
apiserver_ready() {
  curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" | grep -q ok
}
start_apiserver() {
  if alive kube-apiserver && apiserver_ready; then return 0; fi
  require_port_free kube-apiserver "$APISERVER_PORT"
  spawn kube-apiserver "$KUBE_DIR/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.96.0.0/16 \
    --authorization-mode Node,RBAC --allow-privileged=true \
    --enable-priority-and-fairness=false \
    --profiling=false --v=1
  wait_for kube-apiserver 120 apiserver_ready
}

cm_ready() { curl -sfk "https://127.0.0.1:$CM_PORT/healthz" | grep -q ok; }
start_controller_manager() {
  if alive kube-controller-manager && cm_ready; then return 0; fi
  require_port_free kube-controller-manager "$CM_PORT"
  spawn kube-controller-manager "$KUBE_DIR/kube-controller-manager" \
    --kubeconfig "$RUN/kube/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$RUN/kube/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$RUN/kube/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$CM_PORT" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --use-service-account-credentials=true --leader-elect=false \
    --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route' \
    --concurrent-gc-syncs=10 --node-monitor-grace-period=120s --v=1
  wait_for kube-controller-manager 60 cm_ready
}

sched_ready() { curl -sfk "https://127.0.0.1:$SCHED_PORT/healthz" | grep -q ok; }
start_scheduler() {
  if alive kube-scheduler && sched_ready; then return 0; fi
  require_port_free kube-scheduler "$SCHED_PORT"
  spawn kube-scheduler "$KUBE_DIR/kube-scheduler" \
    --kubeconfig "$RUN/kube/scheduler.kubeconfig" \
    --authentication-kubeconfig "$RUN/kube/scheduler.kubeconfig" \
    --authorization-kubeconfig "$RUN/kube/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --leader-elect=false --v=1
  wait_for kube-scheduler 60 sched_ready
}

kwok_ready() { curl -sf -o /dev/null "http://127.0.0.1:$KWOK_PORT/healthz"; }
nodes_ready() {
  local n
  n=$(kubectl_admin get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c True || true)
  ((n >= KWOK_NODES))
}
start_kwok() {
  if ! (alive kwok && kwok_ready); then
    require_port_free kwok "$KWOK_PORT"
    spawn kwok "$KWOK_BIN" --kubeconfig "$RUN/kube/kwok.kubeconfig" \
      --manage-all-nodes=false \
      --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
      --manage-nodes-with-label-selector= \
      --disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom \
      --disregard-status-with-label-selector= \
      --cidr=10.244.0.0/16 --node-ip=10.0.0.1 \
      --node-lease-duration-seconds=40 \
      --server-address "127.0.0.1:$KWOK_PORT"
    wait_for kwok 30 kwok_ready
  fi
  local i manifest=""
  for ((i = 0; i < KWOK_NODES; i++)); do
    manifest+="apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: { kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: \"0\" }
  labels: { type: kwok, kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64, topology.kubernetes.io/zone: zone-$((i % 3)) }
status:
  allocatable: { cpu: \"32\", memory: 256Gi, pods: \"250\" }
  capacity: { cpu: \"32\", memory: 256Gi, pods: \"250\" }
---
"
  done
  printf '%s' "$manifest" | kubectl_admin apply -f - >>"$LOGS/kwok.log" 2>&1 || die "could not register kwok nodes; see $LOGS/kwok.log"
  wait_for kwok 60 nodes_ready
}

# --- Agones SDK server ------------------------------------------------------------------------

start_agones() {
  [[ -x $AGONES_BIN ]] || return 0
  if alive agones-sdk-server && port_open "$AGONES_GRPC_PORT"; then return 0; fi
  require_port_free agones-sdk-server "$AGONES_GRPC_PORT"
  spawn agones-sdk-server env FEATURE_GATES=PlayerTracking=true "$AGONES_BIN" --local \
    --address 127.0.0.1 --grpc-port "$AGONES_GRPC_PORT" --http-port "$AGONES_HTTP_PORT"
  wait_for agones-sdk-server 30 port_open "$AGONES_GRPC_PORT"
}

# --- commands ---------------------------------------------------------------------------------

# Components in start order, each with the line `status` prints.
COMPONENTS=(postgres redis minio etcd kube-apiserver kube-controller-manager kube-scheduler kwok agones-sdk-server)

component_check() {
  case $1 in
    postgres) pg_ready ;;
    redis) redis_ready ;;
    minio) minio_ready ;;
    etcd) etcd_ready ;;
    kube-apiserver) apiserver_ready ;;
    kube-controller-manager) cm_ready ;;
    kube-scheduler) sched_ready ;;
    kwok) kwok_ready && nodes_ready ;;
    agones-sdk-server) port_open "$AGONES_GRPC_PORT" ;;
  esac
}

cmd_build() {
  check_disk 8000 "$CACHE"
  build_all
}

cmd_up() {
  local t0=$SECONDS
  [[ -f $CACHE/bin/kube-$KUBE_VERSION/.done ]] || check_disk 8000 "$CACHE"
  build_all
  make_pki
  start_postgres
  start_redis
  start_minio
  start_etcd
  start_apiserver
  start_controller_manager
  start_scheduler
  start_kwok
  start_agones
  cmd_env >"$RUN/env.sh"
  log "up in $((SECONDS - t0))s; exports in $RUN/env.sh"
}

cmd_down() {
  local c
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c=${COMPONENTS[i]}
    if [[ $c == postgres ]]; then stop_postgres; else stop_component "$c"; fi
  done
  log "stopped"
}

cmd_status() {
  local c state rc=0
  for c in "${COMPONENTS[@]}"; do
    if [[ $c == agones-sdk-server && ! -x $AGONES_BIN ]]; then
      printf '%-24s %s\n' "$c" "unavailable: the Go module proxy does not serve agones.dev/agones"
      continue
    fi
    if component_check "$c" >/dev/null 2>&1; then
      state="running (pid $(pid_of "$c"))"
    else
      state="down (log: $LOGS/$c.log)"
      rc=1
    fi
    printf '%-24s %s\n' "$c" "$state"
  done
  return $rc
}

cmd_env() {
  cat <<EOF
export AETHEX_TEST_ENV_RUN='$RUN'
export AETHEX_TEST_PG_URL='postgres://postgres@127.0.0.1:$PG_PORT/postgres'
export AETHEX_TEST_REDIS_URL='redis://127.0.0.1:$REDIS_PORT'
export AETHEX_TEST_S3_ENDPOINT='http://127.0.0.1:$MINIO_PORT'
export AETHEX_TEST_S3_ACCESS_KEY='$MINIO_USER'
export AETHEX_TEST_S3_SECRET_KEY='$MINIO_PASSWORD'
export AETHEX_TEST_ETCD_URL='http://127.0.0.1:$ETCD_PORT'
export KUBECONFIG='$ADMIN_KUBECONFIG'
export AETHEX_TEST_KUBECONFIG='$ADMIN_KUBECONFIG'
export AETHEX_TEST_HELM='$HELM_BIN'
export AETHEX_TEST_KUBECTL='$KUBECTL_BIN'
export AETHEX_TEST_LOGS='$LOGS'
export AETHEX_TEST_CHROMIUM='/usr/bin/chromium'
export AETHEX_TEST_HAPROXY='/usr/sbin/haproxy'
export AETHEX_TEST_MINIO_BIN='$MINIO_BIN'
EOF
  # Not AGONES_SDK_GRPC_PORT itself: every shard a test spawns inherits the environment, and that
  # variable turns the shard's Agones lifecycle on.
  if [[ -x $AGONES_BIN ]]; then
    echo "export AETHEX_TEST_AGONES_GRPC_PORT='$AGONES_GRPC_PORT'"
    echo "export AETHEX_TEST_AGONES_HTTP_PORT='$AGONES_HTTP_PORT'"
  fi
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  build) cmd_build ;;
  *) echo "usage: test-env.sh up|down|status|env|build (got '${1:-}')" >&2; exit 2 ;;
esac
