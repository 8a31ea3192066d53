#!/usr/bin/env bash
# The main job. At this milestone (engine complete, AiiDA workflows pending): an active-learning
# run driven only by `mmtp` commands on a synthetic CrN-like problem (an analytic magnetic pair
# potential labels the configurations in place of cDFT), then the engine speed benchmark.
# Outputs go to demo-output/ (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
out=${1:-demo-output}
mkdir -p "$out"
mmtp=.venv/bin/mmtp

echo "== the paper's potential: level 16, N_phi 8, N_psi 2, Cr/N"
$mmtp new "$out/crn_lev16.mtp" --level 16 --species Cr N --radial-basis-size 8 \
    --magnetic-basis-size 2 --m-max 3.2 0.1
$mmtp info "$out/crn_lev16.mtp"

echo "== active learning with mmtp commands (a few minutes)"
$mmtp demo "$out/active-learning"

echo "== speed: E+F+S+T on 64-atom CrN cells"
.venv/bin/python benchmarks/bench_efs.py --seconds 2
echo "outputs: $out/ (potentials, training set, trajectories, summary.json); benchmark: benchmarks/bench_efs.json"
