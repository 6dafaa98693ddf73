#!/usr/bin/env bash
# Builds the lab's Go binaries (Kubernetes control plane + kubectl + agnhost, etcd, CoreDNS, helm)
# into ~/.cache/septum/bin/<component>-<version>/. Go's module and build caches live under
# ~/.cache/septum/go so a second run is a no-op: each component is skipped when its stamp matches
# the hash of its inputs (pinned version, wrapper go.mod/go.sum, Go version, this script).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=/dev/null
. "$here/versions.env"
cache="${SEPTUM_CACHE:-$HOME/.cache/septum}"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false -trimpath"
# Two shared cores: one compile job per core (others build at the same time).
jobs="${SEPTUM_GO_JOBS:-2}"
logdir="$cache/logs"
mkdir -p "$cache/bin" "$logdir"

if ! command -v go >/dev/null; then
  echo "septum gobuild: the Go toolchain (go 1.26 or newer) is not on PATH; install it and rerun 'make gobuild'" >&2
  exit 1
fi
gover="$(go env GOVERSION)"

inputs_hash() {  # component version [files...]; contents only, never paths, so that every
  # checkout of the repository sharing ~/.cache/septum agrees on the same stamp.
  { echo "$gover $jobs $1 $2"; cat "$0"; shift 2; cat "$@" 2>/dev/null; } | sha256sum | cut -c1-16
}

# build COMPONENT VERSION OUTDIR HASH -- command...: runs the command unless OUTDIR's stamp matches.
build() {
  local name="$1" version="$2" out="$3" hash="$4"; shift 5
  if [[ -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$hash" ]]; then
    echo "septum gobuild: $name $version cached in $out"
    return 0
  fi
  local log="$logdir/gobuild-$name.log" start=$SECONDS
  echo "septum gobuild: building $name $version (log: $log) ..."
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  # A cold build takes minutes: say so every 30 s.
  ( while sleep 30; do
      echo "septum gobuild: ... still building $name ($((SECONDS - start)) s)"
    done ) &
  local ticker=$!
  local ok=0
  "$@" >"$log" 2>&1 || ok=$?
  kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
  if [[ $ok -ne 0 ]]; then
    tail -n 25 "$log" >&2
    echo "septum gobuild: building $name $version FAILED; see $log, fix the cause and rerun 'make gobuild'" >&2
    exit 1
  fi
  rm -rf "$out" && mv "$out.tmp" "$out"
  echo "$hash" > "$out/.stamp"
  echo "$(date -u +%FT%TZ) $name $version $((SECONDS - start))s" >> "$cache/build-times.log"
  echo "septum gobuild: $name $version built in $((SECONDS - start))s"
}

# --- Kubernetes (+ etcd, built in the same wrapper module so they share compiled dependencies) ---
kdir="$here/kubernetes"
k8s_minor="${KUBERNETES_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
kv=k8s.io/component-base/version
cv=k8s.io/client-go/pkg/version
kflags="-s -w"
for pkg in "$kv" "$cv"; do
  kflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  kflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
kout="$cache/bin/kubernetes-$KUBERNETES_VERSION"
build kubernetes "$KUBERNETES_VERSION" "$kout" \
  "$(inputs_hash kubernetes "$KUBERNETES_VERSION" "$kdir/go.mod" "$kdir/go.sum" "$kdir/cmd/etcd/main.go")" -- \
  bash -c "cd '$kdir' && go build -p $jobs -ldflags '$kflags' -o '$kout.tmp/' \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy \
    k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/test/images/agnhost ./cmd/etcd"

# --- CoreDNS and helm: their go.mod files carry no replace directives, so go install works ---
cout="$cache/bin/coredns-$COREDNS_VERSION"
build coredns "$COREDNS_VERSION" "$cout" "$(inputs_hash coredns "$COREDNS_VERSION")" -- \
  env GOBIN="$cout.tmp" GOFLAGS="-buildvcs=false -trimpath" go install -p "$jobs" \
    -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"

hout="$cache/bin/helm-$HELM_VERSION"
build helm "$HELM_VERSION" "$hout" "$(inputs_hash helm "$HELM_VERSION")" -- \
  env GOBIN="$hout.tmp" GOFLAGS="-buildvcs=false -trimpath" go install -p "$jobs" \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
echo "septum gobuild: all binaries ready under $cache/bin"
