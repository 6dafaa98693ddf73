#!/usr/bin/env bash
# Prints the path of the published ClusterNetworkPolicy CRD (policy.networking.k8s.io, v1alpha2) of
# sigs.k8s.io/network-policy-api at NPAPI_VERSION (lab/gobuild/versions.env), fetched once through
# the Go module proxy and cached under ${SEPTUM_CACHE:-~/.cache/septum}/npapi/<version>/.
#
# The file is installed as published, never rewritten: Septum's engine reads these objects, the
# upstream project owns their schema. The experimental channel is the one taken, because it has
# the fields the engine accepts (nodes and domainNames peers, destinationNamedPort); the standard
# channel lacks them. `go mod download` checks the module against the checksum database.
# Messages go to stderr; stdout carries the path alone, for `kubectl apply -f "$(…)"`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=/dev/null
. "$root/lab/gobuild/versions.env"
: "${NPAPI_VERSION:?lab/gobuild/versions.env must set NPAPI_VERSION}"
cache="${SEPTUM_CACHE:-$HOME/.cache/septum}"
channel="${NPAPI_CHANNEL:-experimental}"
crd_name="policy.networking.k8s.io_clusternetworkpolicies.yaml"
dest_dir="$cache/npapi/$NPAPI_VERSION"
dest="$dest_dir/$crd_name"

die() { echo "fetch-npapi-crds: $*" >&2; exit 1; }

# is_cnp_crd FILE: the CRD of clusternetworkpolicies.policy.networking.k8s.io, serving v1alpha2.
is_cnp_crd() {
  grep -q '^kind: CustomResourceDefinition$' "$1" &&
    grep -q '^  name: clusternetworkpolicies.policy.networking.k8s.io$' "$1" &&
    grep -q '^    name: v1alpha2$' "$1"
}

if [[ -s "$dest" ]] && is_cnp_crd "$dest"; then
  echo "$dest"
  exit 0
fi

gobin="$("$root/scripts/ensure-go.sh")"
export PATH="$gobin:$PATH"
# The module cache the lab's Go builds share (lab/gobuild/build.sh); outside any module.
export GOMODCACHE="$cache/go/mod" GOTOOLCHAIN=local GOFLAGS=-mod=mod
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
module_json="$(cd "$workdir" && go mod download -json "sigs.k8s.io/network-policy-api@$NPAPI_VERSION")" ||
  die "go mod download sigs.k8s.io/network-policy-api@$NPAPI_VERSION failed"
module_dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$module_json")"
[[ -n "$module_dir" && -d "$module_dir" ]] || die "no module directory in: $module_json"
source_file="$module_dir/config/crd/$channel/$crd_name"
[[ -f "$source_file" ]] || die "$NPAPI_VERSION has no config/crd/$channel/$crd_name"
is_cnp_crd "$source_file" || die "$source_file is not the v1alpha2 ClusterNetworkPolicy CRD"

mkdir -p "$dest_dir"
cp "$source_file" "$workdir/$crd_name"
chmod 0644 "$workdir/$crd_name"  # the module cache is read-only
mv -f "$workdir/$crd_name" "$dest"
echo "fetch-npapi-crds: $NPAPI_VERSION ($channel channel) -> $dest" >&2
echo "$dest"
