#!/usr/bin/env bash
# Prints the bin directory of a Go toolchain at least as new as GO_VERSION (lab/gobuild/versions.env):
# the `go` on PATH when it is new enough, else the pinned release, downloaded once from the Go module
# proxy. The proxy is the only source we can rely on: these machines reach package registries only,
# Debian 12's golang-go (1.19) is too old, and Go before 1.21 cannot fetch a newer toolchain itself.
#
# The proxy serves each Go release as the module golang.org/toolchain@v0.0.1-go<version>.<os>-<arch>.
# The download is checked against the module's h1: sum pinned in versions.env (the checksum
# database's record, so a mirror cannot swap it), unpacked in a temporary directory and renamed into
# ${SEPTUM_CACHE:-~/.cache/septum}/toolchain/go<version>.linux-<arch>/ only once complete: an
# interrupted run never leaves a half toolchain behind, and a second run only runs `go version`.
# Messages go to stderr; stdout carries the directory alone, for PATH="$(scripts/ensure-go.sh):$PATH".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=/dev/null
. "$root/lab/gobuild/versions.env"
: "${GO_VERSION:?lab/gobuild/versions.env must set GO_VERSION}"
cache="${SEPTUM_CACHE:-$HOME/.cache/septum}"

die() { echo "ensure-go: $*" >&2; exit 1; }

# version_of GO: "1.26.8" for a release build, "" for anything else (devel, rc, beta, broken).
version_of() {
  local v
  v="$(GOTOOLCHAIN=local "$1" version 2>/dev/null | awk '{print $3}')" || true
  [[ "$v" =~ ^go([0-9]+\.[0-9]+(\.[0-9]+)?)$ ]] && echo "${BASH_REMATCH[1]}" || true
}

# at_least HAVE WANT: numeric comparison of dotted versions (a missing patch number counts as 0).
at_least() {
  local -a have want
  IFS=. read -ra have <<<"$1"
  IFS=. read -ra want <<<"$2"
  for i in 0 1 2; do
    ((${have[i]:-0} > ${want[i]:-0})) && return 0
    ((${have[i]:-0} < ${want[i]:-0})) && return 1
  done
  return 0
}

# The go on PATH wins when new enough: it is what the machine's owner chose.
if path_go="$(command -v go)"; then
  have="$(version_of "$path_go")"
  if [[ -n "$have" ]] && at_least "$have" "$GO_VERSION"; then
    dirname "$path_go"
    exit 0
  fi
fi

case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) die "no pinned Go toolchain for machine type $(uname -m) (supported: x86_64, aarch64)" ;;
esac
release="go$GO_VERSION.linux-$arch"
dest="$cache/toolchain/$release"

cached() { [[ -x "$dest/bin/go" && "$(version_of "$dest/bin/go")" == "$GO_VERSION" ]]; }
if cached; then
  echo "$dest/bin"
  exit 0
fi

sum_var="GO_TOOLCHAIN_SUM_linux_$arch"
want_sum="${!sum_var:-}"
[[ -n "$want_sum" ]] || die "lab/gobuild/versions.env has no $sum_var for Go $GO_VERSION"
for tool in curl unzip sha256sum flock; do
  command -v "$tool" >/dev/null || die "$tool is not installed (make deps installs it)"
done

# GOPROXY is a list; its first entry is where go itself would look first. "direct" means a VCS,
# which does not host toolchains, so it falls back to the public proxy like an unset GOPROXY.
proxy_list="${GOPROXY:-$(command -v go >/dev/null && GOTOOLCHAIN=local go env GOPROXY 2>/dev/null || true)}"
proxy="${proxy_list%%[,|]*}"
case "$proxy" in
  off) die "GOPROXY=off forbids downloading Go $GO_VERSION; install Go >= $GO_VERSION or set GOPROXY" ;;
  "" | direct) proxy=https://proxy.golang.org ;;
esac
module_version="v0.0.1-$release"
url="${proxy%/}/golang.org/toolchain/@v/$module_version.zip"

mkdir -p "$cache/toolchain"
# Concurrent runs (make -j gobuild hubble) wait here; the second finds the first's result.
exec 9>"$cache/toolchain/.lock"
flock 9
if cached; then
  echo "$dest/bin"
  exit 0
fi

# Holding the lock, any temporary directory is an interrupted run's: remove it.
rm -rf "$cache/toolchain"/.tmp.*
tmp="$(mktemp -d "$cache/toolchain/.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "ensure-go: no Go >= $GO_VERSION on PATH; downloading $release from $proxy" >&2
curl -fsSL --retry 3 -o "$tmp/go.zip" "$url" || die "downloading $url failed"
unzip -q "$tmp/go.zip" -d "$tmp/x" || die "$url is not a valid zip file"
rm -f "$tmp/go.zip"
prefix="golang.org/toolchain@$module_version"
[[ -d "$tmp/x/$prefix/bin" ]] || die "$url does not hold $prefix/bin"

# The module's h1: sum (golang.org/x/mod/sumdb/dirhash Hash1): SHA-256 over the sorted lines
# "<sha256 of file>  <path in zip>\n", base64-encoded. sha256sum prints exactly those lines.
digest="$(cd "$tmp/x" && find . -type f -printf '%P\n' | LC_ALL=C sort |
  xargs -d '\n' sha256sum -- | sha256sum | cut -c1-64)"
# Hex to bytes with bash's printf (\xHH), so no xxd or openssl is needed.
got_sum="h1:$(printf "$(sed 's/../\\x&/g' <<<"$digest")" | base64)"
[[ "$got_sum" == "$want_sum" ]] ||
  die "$url has sum $got_sum, expected $want_sum ($sum_var in lab/gobuild/versions.env); nothing installed"

# Zip files do not reliably carry executable bits; Go sets them on first use the same way.
find "$tmp/x/$prefix/bin" "$tmp/x/$prefix/pkg/tool" -maxdepth 2 -type f -exec chmod 0755 {} + 2>/dev/null || true
got="$(version_of "$tmp/x/$prefix/bin/go")"
[[ "$got" == "$GO_VERSION" ]] || die "$url: bin/go reports '${got:-no release version}', expected $GO_VERSION"

rm -rf "$dest"  # only a toolchain that failed `cached` can be here
mv -T "$tmp/x/$prefix" "$dest"
echo "ensure-go: Go $GO_VERSION installed in $dest" >&2
echo "$dest/bin"
