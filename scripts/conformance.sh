#!/usr/bin/env bash
# `make conformance`: the upstream Kubernetes e2e NetworkPolicy specs, unchanged, against Septum
# installed by its chart on the lab (issue 13). Writes the suite's JUnit XML and a summary under
# build/conformance/. The lab is started if needed and left as found: Septum is uninstalled at
# the end only when this script installed it.
#
#   FOCUS  ginkgo focus (default: every Netpol/NetworkPolicy spec)
#   SKIP   ginkgo skip  (default: SCTP — this kernel has no SCTP; see docs/conformance.md)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
septum=.venv/bin/septum
out="build/conformance"
focus="${FOCUS:-Netpol|NetworkPolicy}"
skip="${SKIP:-SCTP}"
mkdir -p "$out/e2e"

e2e_dir="$(lab/gobuild/build-e2e.sh --path)"
"$septum" lab up
kubeconfig="$("$septum" lab kubeconfig)"
helm="$(.venv/bin/python -c 'from septum.lab.binaries import locate; print(locate().helm)')"
installed_here=0
if ! "$helm" --kubeconfig "$kubeconfig" status septum -n kube-system >/dev/null 2>&1; then
  echo "conformance: helm install septum ./helm/septum -n kube-system"
  "$helm" --kubeconfig "$kubeconfig" install septum helm/septum -n kube-system --wait --timeout 5m
  installed_here=1
fi
cleanup() {
  if [[ $installed_here == 1 ]]; then
    "$helm" --kubeconfig "$kubeconfig" uninstall septum -n kube-system --wait || true
  fi
}
trap cleanup EXIT

start=$SECONDS
set +e
"$e2e_dir/e2e.test" --kubeconfig="$kubeconfig" --provider=skeleton --ginkgo.no-color \
  --ginkgo.focus="$focus" --ginkgo.skip="$skip" --ginkgo.timeout=2h \
  --report-dir="$out/e2e" 2>&1 | tee "$out/e2e/e2e.log"
rc=${PIPESTATUS[0]}
set -e
.venv/bin/python scripts/conformance_summary.py "$out/e2e" "$((SECONDS - start))" | tee "$out/summary.md"
exit "$rc"
