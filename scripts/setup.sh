#!/usr/bin/env bash
# forensix set-up on a fresh Debian 12 machine, as root. The only way anything gets installed.
#   scripts/setup.sh           Debian packages, the BPF sensor built for this kernel, the Python package
#   scripts/setup.sh --bench   also what the benchmarks need (nginx, wrk, auditd, a source package)
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it installs Debian packages; recording needs root too)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Build: clang/llvm compile the CO-RE object, bpftool dumps vmlinux.h from the kernel's BTF,
# libbpf1 is loaded at run time. The rest: listed by each part in scripts/debian-packages.txt.
PKGS="clang llvm libbpf-dev libbpf1 bpftool make iproute2 procps"
if [ -f scripts/debian-packages.txt ]; then
  PKGS="$PKGS $(grep -v '^\s*#' scripts/debian-packages.txt | tr '\n' ' ')"
fi
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup.sh: installing Debian packages:$missing"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -e /sys/kernel/btf/vmlinux ]; then
  echo "setup.sh: this kernel has no BTF (/sys/kernel/btf/vmlinux); the sensor cannot be built for it" >&2
  exit 1
fi
echo "setup.sh: building the BPF sensor for $(uname -r)"
make -s -C bpf

echo "setup.sh: installing the forensix Python package"
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

# The web UI's browser libraries (Cytoscape.js, dagre, uPlot), pinned by package-lock.json,
# into src/forensix/web/node_modules, which `forensix ui` serves. Debian's npm only where
# the machine has none (this image's nodejs brings its own).
if ! command -v npm >/dev/null 2>&1; then
  echo "setup.sh: installing nodejs and npm (Debian)"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
echo "setup.sh: installing the web UI's browser libraries (npm ci)"
npm ci --silent --no-audit --no-fund --prefix src/forensix/web

if [ "${1:-}" = "--bench" ]; then
  bash scripts/bench-setup.sh
fi
echo "setup.sh: done. Try: forensix record --store /tmp/host.duckdb --duration 10"
