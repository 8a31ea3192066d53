#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with everything the engine,
# the plugin and the tests need. Safe to run again; used by run-demo.sh, test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# ABINIT 9.6, its NC pseudopotentials and GPAW's LDA PAW setups (for DFT+U) from Debian:
# the cDFT tests run the real code
if ! command -v abinit >/dev/null || [ ! -d /usr/share/abinit/psp ] || [ ! -d /usr/share/gpaw-setups ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bootstrap: installing ABINIT from Debian (apt-get install abinit abinit-data gpaw-data)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq abinit abinit-data gpaw-data >/dev/null
    else
        echo "bootstrap: ABINIT is missing; install it with: sudo apt-get install abinit abinit-data gpaw-data" >&2
    fi
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "bootstrap: Python >= 3.11 is required ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv"
    if ! "$PYTHON" -m venv .venv; then
        # Debian's python3 ships venv/ensurepip separately
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            rm -rf .venv
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            "$PYTHON" -m venv .venv
        else
            echo "bootstrap: cannot create a virtual environment; install python3-venv (apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
    echo "bootstrap: installing aiida-mmtp and its dependencies into .venv (a minute or two)"
    # (this machine's pip config lists local mirrors that may be absent: hide only those warnings)
    .venv/bin/python -m pip install --quiet -e '.[tests]' 2> >(grep -v '^WARNING: Location' >&2)
    .venv/bin/python -c 'import aiida_mmtp.mtp, numba, aiida' # fail loudly if the install did not work
    rm -f .venv/.installed-*
    touch "$stamp"
fi
