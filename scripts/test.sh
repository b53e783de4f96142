#!/usr/bin/env bash
# Install ssltrace with its test extras (and the Debian packages the SLURM and report tests use,
# where apt is available), lint the code and the workflow, then run the whole test suite.
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
echo "== lint: ruff, ruff format, snakefmt, snakemake --lint"
ruff check .
ruff format --check .
snakefmt --check Snakefile workflow
snakemake --lint --configfile presets/demo.yaml > /tmp/ssltrace-lint.log 2>&1 \
    || { cat /tmp/ssltrace-lint.log; exit 1; }
echo "== tests"
python3 -m pytest -q "$@"
