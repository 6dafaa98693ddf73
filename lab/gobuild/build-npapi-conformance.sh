#!/usr/bin/env bash
# Builds the network-policy-api conformance suite (package sigs.k8s.io/network-policy-api/conformance)
# at NPAPI_VERSION (lab/gobuild/versions.env) — the release whose ClusterNetworkPolicy CRD Septum
# installs (scripts/fetch-npapi-crds.sh) — for the conformance runs (issue 13), unchanged.
#
# Implementations run the suite as `go test ./conformance/... -args <flags>` from a checkout of
# the repository. This builds the same test package with `go test -c` from a copy of the module
# as the Go module proxy serves it (checked against the checksum database), with the module's own
# go.mod and go.sum: the suite links exactly the dependencies upstream tested it with. The copy
# lives in the cache, never in this checkout. The binary takes the same flags, prefixed with
# `-test.` for the testing package's own (e.g. -test.run, -test.v, -test.timeout) and plain for the
# suite's (-conformance-profiles, -supported-features, -all-features, -report-output, ...).
# It lands in ~/.cache/septum/bin/npapi-conformance-<version>/, stamped like build-e2e.sh's.
# `--path` prints that directory (building first if needed).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=/dev/null
. "$here/versions.env"
: "${NPAPI_VERSION:?lab/gobuild/versions.env must set NPAPI_VERSION}"
cache="${SEPTUM_CACHE:-$HOME/.cache/septum}"
out="$cache/bin/npapi-conformance-$NPAPI_VERSION"
jobs="${SEPTUM_GO_JOBS:-2}"
module="sigs.k8s.io/network-policy-api"

if [[ "${1:-}" == "--path" ]]; then
  "$0" >/dev/null
  echo "$out"
  exit 0
fi

gobin="$("$here/../../scripts/ensure-go.sh")" || { echo "build-npapi-conformance: no usable Go toolchain" >&2; exit 1; }
export PATH="$gobin:$PATH"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false -trimpath"

hash="$({ go env GOVERSION; echo "$NPAPI_VERSION $jobs"; cat "$0"; } | sha256sum | cut -c1-16)"
if [[ -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$hash" && -x "$out/conformance.test" ]]; then
  echo "septum build-npapi-conformance: conformance.test $NPAPI_VERSION cached in $out"
  exit 0
fi

mkdir -p "$cache/logs"
log="$cache/logs/gobuild-npapi-conformance.log"
start=$SECONDS
echo "septum build-npapi-conformance: building $module/conformance $NPAPI_VERSION (log: $log) ..."
work="$cache/npapi-src/$NPAPI_VERSION"
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
if ! (
  set -e
  module_dir="$(cd /tmp && go mod download -json "$module@$NPAPI_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -n "$module_dir" && -f "$module_dir/go.mod" ]] || { echo "no module directory for $module@$NPAPI_VERSION"; exit 1; }
  # A writable copy: the module cache is read-only, and `go test -c` may add go.sum lines.
  rm -rf "$work" && mkdir -p "$(dirname "$work")"
  cp -r "$module_dir" "$work" && chmod -R u+w "$work"
  cd "$work"
  go test -c -p "$jobs" -ldflags "-s -w" -o "$out.tmp/conformance.test" ./conformance
) >"$log" 2>&1; then
  tail -n 25 "$log" >&2
  echo "septum build-npapi-conformance: FAILED; see $log" >&2
  exit 1
fi
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$hash" > "$out/.stamp"
echo "$(date -u +%FT%TZ) npapi-conformance $NPAPI_VERSION $((SECONDS - start))s" >> "$cache/build-times.log"
echo "septum build-npapi-conformance: built in $((SECONDS - start))s into $out"
