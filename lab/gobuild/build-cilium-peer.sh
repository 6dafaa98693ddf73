#!/usr/bin/env bash
# Builds the Cilium peer of `septum bench datapath` (issue 17): Cilium's own endpoint program
# (bpf_lxc.c's cil_from_container) from github.com/cilium/cilium at the release the hubble build
# pins, compiled with Debian's clang-19 and the agent's clang flags through Cilium's BPF unit-test
# scaffolding (bpf/tests/lib/bpf_lxc.h; knobs in lab/gobuild/ciliumpeer/peer_lxc.c), and
# `ciliumpeer`, the Go loader that test-runs it (lab/gobuild/ciliumpeer/*.go).
#
# The loader is built in a wrapper module generated in the cache (it requires cilium at the pinned
# tag and re-declares that tag's replaces, as build-hubble.sh does), so Cilium's loader library
# (pkg/bpf) and map encoders are Cilium's code and nothing of Cilium's is in the checkout. The
# module and build caches are the hubble build's: the cilium module is downloaded once.
# Output: ~/.cache/septum/bin/cilium-peer-<version>/{peer_lxc.o,ciliumpeer}, stamped like
# build-e2e.sh's outputs; `--path` prints that directory (building first if needed).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="${HUBBLE_CILIUM_VERSION:-$(sed -n 's/^HUBBLE_CILIUM_VERSION="\${HUBBLE_CILIUM_VERSION:-\(v[0-9.]*\)}"$/\1/p' "$here/build-hubble.sh")}"
[[ -n "$version" ]] || { echo "build-cilium-peer: cannot read the pinned cilium version from build-hubble.sh" >&2; exit 1; }
cache="${SEPTUM_CACHE:-$HOME/.cache/septum}"
out="$cache/bin/cilium-peer-$version"
clang="${CILIUM_PEER_CLANG:-clang-19}"

if [[ "${1:-}" == "--path" ]]; then
  "$0" >/dev/null
  echo "$out"
  exit 0
fi

command -v "$clang" >/dev/null || { echo "build-cilium-peer: $clang is not installed (make deps installs it)" >&2; exit 1; }
gobin="$("$here/../../scripts/ensure-go.sh")" || { echo "build-cilium-peer: no usable Go toolchain" >&2; exit 1; }
export PATH="$gobin:$PATH"
hubble_cache="$cache/hubble/$version"
export GOMODCACHE="$hubble_cache/gomod" GOCACHE="$hubble_cache/gocache" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="-mod=mod -buildvcs=false -trimpath" CGO_ENABLED=0

hash="$({ go env GOVERSION; "$clang" --version | head -1; echo "$version"; cat "$0" "$here"/ciliumpeer/*; } | sha256sum | cut -c1-16)"
if [[ -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$hash" && -x "$out/ciliumpeer" && -f "$out/peer_lxc.o" ]]; then
  echo "septum build-cilium-peer: cilium $version peer cached in $out"
  exit 0
fi

start=$SECONDS
mkdir -p "$cache/logs"
log="$cache/logs/build-cilium-peer.log"
echo "septum build-cilium-peer: building cilium $version's bpf_lxc and its loader (log: $log) ..."
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
work="$cache/cilium-peer-src/$version"
if ! (
  set -e
  src="$(go mod download -json "github.com/cilium/cilium@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  upstream_mod="$(go mod download -json "github.com/cilium/cilium@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [[ -d "$src/bpf/tests/lib" && -f "$upstream_mod" ]] || { echo "no cilium $version module (bpf/tests/lib)"; exit 1; }

  # The object: the agent's clang flags (pkg/datapath/loader StandardCFlags, -mcpu=v3 as the agent
  # picks on this kernel), the module's read-only tree on the include path, our file compiled.
  flags="$(sed -n '/StandardCFlags = \[\]string{/,/}/p' "$src/pkg/datapath/loader/compile.go" | grep -o '"-[^"]*"' | tr -d '"' | tr '\n' ' ')"
  [[ "$flags" == *"--target=bpf"* ]] || { echo "cannot read StandardCFlags from cilium's compile.go"; exit 1; }
  # shellcheck disable=SC2086
  nice -n 10 "$clang" $flags -mcpu=v3 -g -I"$src/bpf" -I"$src/bpf/include" -I"$src/bpf/tests" \
    -c "$here/ciliumpeer/peer_lxc.c" -o "$out.tmp/peer_lxc.o"

  # The loader: a wrapper module requiring cilium at the tag, with that tag's replaces.
  rm -rf "$work" && mkdir -p "$work"
  {
    echo "module septum.local/ciliumpeer"
    echo
    grep -m1 '^go ' "$upstream_mod"
    echo
    echo "require github.com/cilium/cilium $version"
    echo
    sed -n -e '/^replace[[:space:]]*($/,/^)/p' -e '/^replace[[:space:]][^(]*$/p' "$upstream_mod"
    grep '^godebug' "$upstream_mod" || true
  } >"$work/go.mod"
  cp "$here"/ciliumpeer/*.go "$work/"
  cd "$work"
  nice -n 10 go build -p 2 -ldflags "-s -w" -o "$out.tmp/ciliumpeer" .
) >"$log" 2>&1; then
  tail -n 25 "$log" >&2
  echo "septum build-cilium-peer: FAILED; see $log" >&2
  exit 1
fi
"$clang" --version | head -1 >"$out.tmp/clang-version"
echo "$version" >"$out.tmp/cilium-version"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$hash" >"$out/.stamp"
echo "$(date -u +%FT%TZ) cilium-peer $version $((SECONDS - start))s" >>"$cache/build-times.log"
echo "septum build-cilium-peer: built in $((SECONDS - start))s into $out"
