#!/usr/bin/env bash
# Builds the real `hubble` CLI from github.com/cilium/cilium at a pinned tag.
#
# The hubble command lives inside the large cilium module, whose go.mod carries
# replace directives that Go ignores in a dependency; a wrapper module
# (lab/gobuild/hubble) requires cilium at the pinned tag and re-declares that
# tag's replaces, read from the module proxy's copy of its go.mod.
#
# Everything is cached under ~/.cache/septum/hubble/<tag>/ (binary, module and
# build caches), so a second run only checks the binary and exits.
set -euo pipefail

HUBBLE_CILIUM_VERSION="${HUBBLE_CILIUM_VERSION:-v1.20.2}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${SEPTUM_CACHE:-$HOME/.cache/septum}/hubble/${HUBBLE_CILIUM_VERSION}"
bin="$root/bin/hubble"

if [[ "${1:-}" == "--path" ]]; then
  # For tests: the binary's path, built first if needed (quietly).
  "$0" >/dev/null
  echo "$bin"
  exit 0
fi

if [[ -x "$bin" ]] && "$bin" version >/dev/null 2>&1; then
  echo "hubble ${HUBBLE_CILIUM_VERSION}: cached at $bin"
  exit 0
fi

# A Go >= GO_VERSION (lab/gobuild/versions.env): the go on PATH when new enough, else the pinned
# one from the Go module proxy, so `--path` works from a test as well as from `make hubble`.
gobin="$("$here/../../scripts/ensure-go.sh")" || { echo "build-hubble: no usable Go toolchain" >&2; exit 1; }
export PATH="$gobin:$PATH"

export GOMODCACHE="$root/gomod" GOCACHE="$root/gocache" GOFLAGS="-mod=mod" CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
work="$root/src"
mkdir -p "$work" "$root/bin"

upstream_mod="$(go mod download -json "github.com/cilium/cilium@${HUBBLE_CILIUM_VERSION}" |
  sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[[ -f "$upstream_mod" ]] || { echo "build-hubble: cannot download cilium ${HUBBLE_CILIUM_VERSION}" >&2; exit 1; }

go_line="$(grep -m1 '^go ' "$upstream_mod")"
{
  echo "module septum.local/hubble"
  echo
  echo "$go_line"
  echo
  echo "require github.com/cilium/cilium ${HUBBLE_CILIUM_VERSION}"
  echo
  # Copy every replace directive of the pinned tag: single-line and block form.
  awk '
    /^replace[[:space:]]*\($/ { block = 1; print; next }
    block && /^\)/            { block = 0; print; next }
    block                     { print; next }
    /^replace[[:space:]]/     { print }
  ' "$upstream_mod"
  grep '^godebug' "$upstream_mod" || true
} >"$work/go.mod.new"
if ! cmp -s "$work/go.mod.new" "$work/go.mod.gen" 2>/dev/null; then
  cp "$work/go.mod.new" "$work/go.mod"
  cp "$work/go.mod.new" "$work/go.mod.gen"
  rm -f "$work/go.sum"
fi
rm -f "$work/go.mod.new"
cp "$here/hubble/main.go" "$work/main.go"

version="${HUBBLE_CILIUM_VERSION#v}"
ldflags="-s -w -X github.com/cilium/cilium/hubble/pkg.Version=v${version}"
ldflags+=" -X github.com/cilium/cilium/hubble/pkg.GitBranch=septum-pinned"
ldflags+=" -X github.com/cilium/cilium/hubble/pkg.GitHash=${HUBBLE_CILIUM_VERSION}"
echo "hubble ${HUBBLE_CILIUM_VERSION}: building (first build takes many minutes)"
(cd "$work" && go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" .)
mv "$bin.tmp" "$bin"
"$bin" version
