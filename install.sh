#!/usr/bin/env bash
# Install everything needle needs on a fresh Debian machine (run as root; idempotent):
#   Debian: Fashion-MNIST (offline data), SLURM + munge (the cluster tests start a local cluster)
#   Python: a virtual environment in .venv with the pinned packages of requirements.txt
set -euo pipefail
cd "$(dirname "$0")"
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        dataset-fashion-mnist slurm-wlm munge >/dev/null
else
    echo "install.sh: not root or no apt-get: install dataset-fashion-mnist, slurm-wlm and munge yourself" >&2
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
echo "install.sh: ready (.venv/bin/snakemake, .venv/bin/python -m pytest)"
