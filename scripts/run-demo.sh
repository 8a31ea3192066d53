#!/usr/bin/env bash
# The main job: set up the embedded AiiDA default (SQLite + ZeroMQ broker, abinit and mmtp codes,
# pseudopotential families) and run the `fast` CrN active-learning campaign with real constrained DFT
# (ABINIT) to convergence, then export the potential and training set and draw the plots.
# The profile lives in $AIIDA_PATH (default: .aiida in the repository); outputs go to demo-output/ (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export AIIDA_PATH=${AIIDA_PATH:-$PWD/.aiida}
export PATH="$PWD/.venv/bin:$PATH"
out=${1:-demo-output}
mkdir -p "$out"

echo "== the embedded AiiDA default (profile mmtp in $AIIDA_PATH)"
aiida-mmtp setup -p mmtp

echo "== the fast CrN campaign: cDFT labels (ABINIT), fits, moment equilibration and MD with active learning"
aiida-mmtp campaign launch -p mmtp --protocol fast
aiida-mmtp campaign status -p mmtp

echo "== results"
aiida-mmtp campaign export -p mmtp -o "$out"
aiida-mmtp campaign plot -p mmtp -o "$out"
cat <<INFO

potential, training set, summary and plots: $out/
provenance:  export AIIDA_PATH=$AIIDA_PATH; .venv/bin/verdi -p mmtp process list -a
             .venv/bin/aiida-mmtp campaign status -p mmtp; .venv/bin/verdi -p mmtp node graph generate PK
INFO
