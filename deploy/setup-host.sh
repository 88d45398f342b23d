#!/usr/bin/env bash
# Install what bpfproxy needs on a Debian 12 host, idempotently: system packages (bcc from Debian,
# iproute2, curl; iptables and nftables, whose kube-proxy-style rulesets tests/unit/test_bench_rules.py loads
# in a namespace), kernel headers for bcc, bpffs. Run as root; `make setup` calls it.
set -euo pipefail

packages=(python3-bpfcc python3-venv python3-pip iproute2 curl util-linux gcc make iptables nftables)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

kernel=$(uname -r)
headers_dir="/lib/modules/$kernel/build"
exact_headers=""
if [ ! -e "$headers_dir/include" ]; then
  # Headers built for the running kernel, when Debian has them; otherwise the 6.12 cloud ones.
  if apt-cache show "linux-headers-$kernel" >/dev/null 2>&1; then
    exact_headers="linux-headers-$kernel"
  fi
  if [ -n "$exact_headers" ]; then
    dpkg-query -W -f='${Status}' "$exact_headers" 2>/dev/null | grep -q "install ok installed" || missing+=("$exact_headers")
  elif ! ls -d /usr/src/linux-headers-*-cloud-amd64 >/dev/null 2>&1; then
    missing+=(linux-headers-cloud-amd64)
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    # linux-headers-cloud-amd64 may not exist as a name on every mirror: fall back to the 6.12 one.
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
      missing=("${missing[@]/linux-headers-cloud-amd64/linux-headers-6.12-cloud-amd64}")
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
  fi
fi

if [ ! -e "$headers_dir/include" ] && [ -z "$exact_headers" ]; then
  arch_dir=$(ls -d /usr/src/linux-headers-*-cloud-amd64 | sort -V | tail -n 1)
  common_dir="${arch_dir%-cloud-amd64}-common"
  mkdir -p "/lib/modules/$kernel"
  ln -sfn "$arch_dir" "/lib/modules/$kernel/build"
  ln -sfn "$common_dir" "/lib/modules/$kernel/source"
  cat >&2 <<MSG
################################################################################
# WARNING: no kernel headers exist for the running kernel $kernel.
# bcc will compile against $(basename "$arch_dir") instead:
#   /lib/modules/$kernel/build  -> $arch_dir
#   /lib/modules/$kernel/source -> $common_dir
# bpfproxy's programs only use UAPI structs (tc/XDP), which these headers carry.
################################################################################
MSG
fi

if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf
fi
