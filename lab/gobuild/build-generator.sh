#!/usr/bin/env bash
# Builds cyclonus, the generator of conflicting NetworkPolicy cases that Antrea runs nightly
# (`cyclonus generate`: it writes policies, installs them one at a time, probes every pod pair and
# compares with its own truth table), for the conformance runs (issue 13).
#
# Why cyclonus and not network-policy-api's policy-assistant `generate`: the Go module proxy
# serves github.com/mattfenwick/cyclonus (v0.5.6, its latest tag), and does not serve the
# policy-assistant module (checked 2026-12-06: `go list -m -versions` of it fails).
# cyclonus' go.mod has no replace directives, so `go install module/cmd@version` builds it with
# exactly the dependencies its release was tested with (checked against the checksum database).
# The binary lands in ~/.cache/septum/bin/cyclonus-<version>/, stamped like build-e2e.sh's;
# `--path` prints that directory (building first if needed).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CYCLONUS_VERSION="${CYCLONUS_VERSION:-v0.5.6}"
cache="${SEPTUM_CACHE:-$HOME/.cache/septum}"
out="$cache/bin/cyclonus-$CYCLONUS_VERSION"
jobs="${SEPTUM_GO_JOBS:-2}"

if [[ "${1:-}" == "--path" ]]; then
  "$0" >/dev/null
  echo "$out"
  exit 0
fi

gobin="$("$here/../../scripts/ensure-go.sh")" || { echo "build-generator: no usable Go toolchain" >&2; exit 1; }
export PATH="$gobin:$PATH"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="-buildvcs=false -trimpath"

hash="$({ go env GOVERSION; echo "$CYCLONUS_VERSION $jobs"; cat "$0"; } | sha256sum | cut -c1-16)"
if [[ -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$hash" && -x "$out/cyclonus" ]]; then
  echo "septum build-generator: cyclonus $CYCLONUS_VERSION cached in $out"
  exit 0
fi

mkdir -p "$cache/logs"
log="$cache/logs/gobuild-cyclonus.log"
start=$SECONDS
echo "septum build-generator: building cyclonus $CYCLONUS_VERSION (log: $log) ..."
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
if ! (
  cd /tmp  # outside any module: `go install pkg@version` uses the release's own go.mod
  GOBIN="$out.tmp" go install -p "$jobs" -ldflags "-s -w" \
    "github.com/mattfenwick/cyclonus/cmd/cyclonus@$CYCLONUS_VERSION"
) >"$log" 2>&1; then
  tail -n 25 "$log" >&2
  echo "septum build-generator: FAILED; see $log" >&2
  exit 1
fi
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$hash" > "$out/.stamp"
echo "$(date -u +%FT%TZ) cyclonus $CYCLONUS_VERSION $((SECONDS - start))s" >> "$cache/build-times.log"
echo "septum build-generator: built in $((SECONDS - start))s into $out"
