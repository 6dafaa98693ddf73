#!/usr/bin/env bash
# Builds the upstream Kubernetes end-to-end suite (`e2e.test`) and `ginkgo` at the lab's pinned
# release, for the conformance runs (issue 13): Septum runs the suite unchanged.
#
# e2e.test is the test binary of package k8s.io/kubernetes/test/e2e, compiled with `go test -c`
# inside a copy of the lab's Kubernetes wrapper module (lab/gobuild/kubernetes, whose replaces
# make the staging modules resolve); the copy lives in the cache, so the test-only requirements
# Go adds to its go.sum never touch the checkout. ginkgo is the version k8s.io/kubernetes
# requires. Both land in ~/.cache/septum/bin/e2e-<version>/, stamped like build.sh's outputs.
# `--path` prints that directory (building first if needed).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=/dev/null
. "$here/versions.env"
cache="${SEPTUM_CACHE:-$HOME/.cache/septum}"
out="$cache/bin/e2e-$KUBERNETES_VERSION"
jobs="${SEPTUM_GO_JOBS:-2}"

if [[ "${1:-}" == "--path" ]]; then
  "$0" >/dev/null
  echo "$out"
  exit 0
fi

gobin="$("$here/../../scripts/ensure-go.sh")" || { echo "build-e2e: no usable Go toolchain" >&2; exit 1; }
export PATH="$gobin:$PATH"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false -trimpath"

hash="$({ go env GOVERSION; echo "$KUBERNETES_VERSION $jobs"; cat "$0" "$here/kubernetes/go.mod"; } | sha256sum | cut -c1-16)"
if [[ -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$hash" && -x "$out/e2e.test" && -x "$out/ginkgo" ]]; then
  echo "septum build-e2e: e2e.test and ginkgo $KUBERNETES_VERSION cached in $out"
  exit 0
fi

work="$cache/e2e-src/$KUBERNETES_VERSION"
rm -rf "$work" && mkdir -p "$work" "$cache/logs"
cp "$here/kubernetes/go.mod" "$here/kubernetes/go.sum" "$work/"
# The wrapper must reach the test packages' own requirements: declare the e2e package as imported.
cat > "$work/e2e_tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
	_ "k8s.io/kubernetes/test/e2e"
)
GO
log="$cache/logs/gobuild-e2e.log"
start=$SECONDS
echo "septum build-e2e: building e2e.test and ginkgo $KUBERNETES_VERSION (log: $log) ..."
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
if ! (
  cd "$work"
  go mod tidy -e >/dev/null 2>&1 || true
  k8s_minor="${KUBERNETES_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
  flags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  done
  go test -c -p "$jobs" -ldflags "$flags" -o "$out.tmp/e2e.test" k8s.io/kubernetes/test/e2e
  go build -p "$jobs" -ldflags "-s -w" -o "$out.tmp/ginkgo" github.com/onsi/ginkgo/v2/ginkgo
) >"$log" 2>&1; then
  tail -n 25 "$log" >&2
  echo "septum build-e2e: FAILED; see $log" >&2
  exit 1
fi
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$hash" > "$out/.stamp"
echo "$(date -u +%FT%TZ) e2e $KUBERNETES_VERSION $((SECONDS - start))s" >> "$cache/build-times.log"
echo "septum build-e2e: built in $((SECONDS - start))s into $out"
