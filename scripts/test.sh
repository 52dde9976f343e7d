#!/usr/bin/env bash
# The test command (README and CI). Runs as root: the BPF tests use the real kernel.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "test.sh: pytest collected no tests" >&2
fi
exit $rc
