#!/usr/bin/env bash
# Install ssltrace with its test extras (and the Debian packages the SLURM and report tests use,
# where apt is available), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[test]"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -f scripts/debian-packages.txt ]; then
    if ! dpkg -s $(cat scripts/debian-packages.txt) >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends $(cat scripts/debian-packages.txt) >/dev/null \
            || echo "warning: apt-get install failed; SLURM/report tests will skip with a reason"
    fi
fi
python3 -m pytest -q "$@"
