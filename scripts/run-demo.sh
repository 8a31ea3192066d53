#!/usr/bin/env bash
# The main job: set up the embedded AiiDA default (SQLite + ZeroMQ broker, abinit and mmtp codes,
# pseudopotential families) and run the `fast` CrN active-learning campaign with real constrained DFT
# (ABINIT) to convergence, then export the potential and training set, draw the plots and compute the
# potential's properties (elastic constants, phonons, QHA for FM, AFM and PM).
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

echo "== properties of the potential: state averages, elastic constants, phonons (FM, AFM, PM), QHA (PM)"
aiida-mmtp properties launch -p mmtp --protocol fast
aiida-mmtp properties export -p mmtp -o "$out/properties"
cat <<INFO

potential, training set, summary and plots: $out/
properties (JSON, CSV, PNG; Table II beside the paper's): $out/properties/
provenance:  export AIIDA_PATH=$AIIDA_PATH; .venv/bin/verdi -p mmtp process list -a
             .venv/bin/aiida-mmtp campaign status -p mmtp; .venv/bin/verdi -p mmtp node graph generate PK
INFO
