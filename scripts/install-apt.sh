#!/usr/bin/env bash
# Install Septum's Debian packages, only those missing (idempotent, fast when done).
set -euo pipefail
packages=(
  clang llvm libbpf-dev bpftool          # build and inspect the BPF object
  clang-19                               # Cilium's bpf_lxc, the datapath bench's peer (Cilium 1.20 needs >= 19)
  iproute2 iptables ipset conntrack      # netns/veth/tc, the iptables+ipset baseline, conntrack
  nftables                               # `nft list ruleset` in the lab's leftover check
  iperf3                                 # throughput benchmark
  wrk                                    # HTTP load generator of `septum bench l7`
  containernetworking-plugins            # CNI plugins for the lab (ptp, host-local, loopback)
  openssl ca-certificates git curl       # lab certificates, Go module fetches, the demo's HTTP client
  unzip                                  # the Go toolchain zip from the module proxy (scripts/ensure-go.sh)
  python3-venv
  chromium                               # the web UI's browser tests and `septum bench ui` (headless)
)
# The web UI's build (npm ci + vite): Debian's nodejs/npm unless a node with npm is already here
# (a NodeSource nodejs bundles npm and conflicts with Debian's npm package).
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $EUID -ne 0 ]]; then
    echo "septum: missing Debian packages (${missing[*]}); run make as root to install them" >&2
    exit 1
  fi
  echo "septum: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# bpffs: pins live under /sys/fs/bpf/septum
if ! mountpoint -q /sys/fs/bpf; then mount -t bpf bpf /sys/fs/bpf; fi
