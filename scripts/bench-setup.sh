#!/usr/bin/env bash
# Install what `python -m bench` needs: nginx, wrk, auditd, strace, bpftool, a C toolchain,
# py-spy, a deb-src entry and the Debian source package the compile workload builds (with
# its build dependencies). Called by `scripts/setup.sh --bench`; safe to run again.
set -euo pipefail

BENCH_SRC_PACKAGE="${BENCH_SRC_PACKAGE:-bash}"
BENCH_SRC_DIR="${BENCH_SRC_DIR:-/var/cache/forensix-bench/src}"

export DEBIAN_FRONTEND=noninteractive

# deb-src: copy the first deb entry of debian.sources with Types: deb-src.
SRC_LIST=/etc/apt/sources.list.d/forensix-bench-src.sources
if [ ! -f "$SRC_LIST" ]; then
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    awk 'BEGIN{RS=""; ORS="\n\n"} NR==1 {sub(/Types: deb/, "Types: deb-src"); print}' \
      /etc/apt/sources.list.d/debian.sources > "$SRC_LIST"
  elif [ -f /etc/apt/sources.list ]; then
    grep -E '^deb ' /etc/apt/sources.list | head -n 1 | sed 's/^deb /deb-src /' \
      > /etc/apt/sources.list.d/forensix-bench-src.list
  fi
fi

apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  nginx wrk auditd strace bpftool linux-perf gcc make dpkg-dev >/dev/null
apt-get build-dep -y -qq "$BENCH_SRC_PACKAGE" >/dev/null

# The source tree, unpacked once; the bench copies it to a scratch directory per run.
mkdir -p "$BENCH_SRC_DIR"
if ! ls -d "$BENCH_SRC_DIR/$BENCH_SRC_PACKAGE"-*/ >/dev/null 2>&1; then
  (cd "$BENCH_SRC_DIR" && apt-get source -qq "$BENCH_SRC_PACKAGE" >/dev/null)
fi

# The distribution nginx starts at install time on some systems; the bench runs its own.
if [ -f /run/nginx.pid ]; then
  kill "$(cat /run/nginx.pid)" 2>/dev/null || true
fi

python3 -m pip install -q py-spy || true
echo "bench set-up done: sources in $BENCH_SRC_DIR"
