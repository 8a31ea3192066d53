#!/usr/bin/env bash
# The main job. For now (engine milestone): build the paper's level-16 mMTP for CrN, evaluate
# MLIP-3's reference configurations with our engine, and run the speed benchmark.
# Outputs go to demo-output/ (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
out=${1:-demo-output}
mkdir -p "$out"
shared=${MMTP_SHARED:-../shared}
mmtp=.venv/bin/mmtp

echo "== a new level-16 magnetic MTP for CrN (N_phi 8, N_psi 2, M_max Cr 3.2, N 0.1 mu_B)"
$mmtp new "$out/crn_lev16.mtp" --level 16 --species Cr N --radial-basis-size 8 \
    --magnetic-basis-size 2 --m-max 3.2 0.1
$mmtp info "$out/crn_lev16.mtp"

if [ -d "$shared/reference/mlip" ]; then
    echo "== MLIP-3's magnetic reference potential on its three 64-atom CrN configurations"
    $mmtp calc-efs "$shared/reference/mlip/pot16_mag3.mtp" "$shared/reference/mlip/three_mag.cfg" \
        "$out/three_mag_mmtp.cfg" --species Cr N --energy-mode plain
    .venv/bin/python - "$out/three_mag_mmtp.cfg" "$shared/reference/mlip/three_mag_mlip3.cfg" <<'PY'
import sys
import numpy as np
from aiida_mmtp.mtp.cfg_io import read_cfg
ours, ref = read_cfg(sys.argv[1]), read_cfg(sys.argv[2])
for k, (a, b) in enumerate(zip(ours, ref), 1):
    print(f'  config {k}: E {a.energy:.10f} eV (MLIP-3 {b.energy:.10f}), '
          f'max |dF| {np.abs(a.forces - b.forces).max():.1e} eV/A, '
          f'max |dT| {np.abs(a.mag_forces - b.mag_forces).max():.1e} eV/mu_B')
PY
fi

echo "== speed: E+F+S+T on 64-atom CrN cells"
.venv/bin/python benchmarks/bench_efs.py --seconds 2
echo "outputs: $out/ (potential, labelled .cfg); benchmark figures: benchmarks/bench_efs.json"
