"""Benchmark: E + F + S + T (and dE/dtheta) on 64-atom CrN cells, level 16, N_phi 8, N_psi 2, R_cut 5 A.

Prints microseconds per atom per evaluation at 1 and 2 threads and writes
``bench_efs.json`` beside this file. The first call (numba compile, or load
from numba's on-disk cache) is timed and reported separately.

    python benchmarks/bench_efs.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# MLIP-2/3 and motep on this machine kind, one thread, microseconds per atom (shared/docs/mtp.md)
ANCHORS = {
    'nonmagnetic E+F+S': {'MLIP-2': 134, 'MLIP-3': 197, 'motep C ext': 128, 'motep numba': 161},
    'magnetic E+F+S+T': {'MLIP-3': 493, 'motep C ext': 256, 'motep numba': 266},
    'dE/dtheta': {'MLIP-2': 370, 'MLIP-3': 308},
}


def crn_cells(n: int, seed: int = 0):
    from aiida_mmtp.mtp.structures import random_collinear_moments, rattle, rocksalt, supercell

    rng = np.random.default_rng(seed)
    cells = []
    for _ in range(n):
        cfg = rattle(supercell(rocksalt(4.15), (2, 2, 2)), 0.1, rng)
        moments = random_collinear_moments(cfg.types, {0: 2.4, 1: 0.05}, rng)
        cfg.moments = moments * rng.uniform(0.85, 1.15, size=moments.shape)
        cells.append(cfg)
    return cells


def trained_like(n_psi: int, seed: int = 0):
    from aiida_mmtp.mtp.potential import Potential

    pot = Potential.from_level(
        16, ['Cr', 'N'], n_phi=8, n_psi=n_psi, m_max=[3.2, 0.1] if n_psi > 1 else None, seed=seed
    )
    theta = pot.get_params()
    theta[pot.n_radial_params :] = np.random.default_rng(seed).uniform(-0.1, 0.1, theta.size - pot.n_radial_params)
    pot.set_params(theta)
    return pot


def cold_compile_seconds() -> float:
    """Import + first evaluation in a fresh process with an empty numba cache (pure compile cost)."""
    code = (
        'import time; t = time.perf_counter(); import bench_efs as b; from aiida_mmtp.mtp.evaluate import evaluate; '
        'evaluate(b.trained_like(2), b.crn_cells(1)[0], gradient=True); print(time.perf_counter() - t)'
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = subprocess.run([sys.executable, '-c', code], env=env, cwd=Path(__file__).parent,
                             capture_output=True, text=True, check=True)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def time_per_atom(fns: dict, cells, seconds: float, rounds: int = 6) -> dict:
    """Microseconds per atom per evaluation of each of ``fns`` (name -> function of a cell): the best of ``rounds``
    rounds, the cases taken in turn within each round, so that a slow spell of a shared machine (seconds long)
    falls on every case alike instead of on one."""
    best = dict.fromkeys(fns, np.inf)
    for _ in range(rounds):
        for name, fn in fns.items():
            n_atoms = 0
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds / rounds:
                for cfg in cells:
                    fn(cfg)
                    n_atoms += cfg.natoms
            best[name] = min(best[name], (time.perf_counter() - t0) / n_atoms * 1e6)
    return {name: float(v) for name, v in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=6.0, help='seconds per case and thread count, over all rounds')
    args = parser.parse_args()

    t0 = time.perf_counter()
    import numba

    from aiida_mmtp.mtp.evaluate import evaluate
    from aiida_mmtp.mtp.neighbors import neighbor_list

    cells = crn_cells(4)
    mag, nonmag = trained_like(2), trained_like(1)
    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate(mag, cells[0], gradient=True)
    t_first = time.perf_counter() - t0
    t_cold = cold_compile_seconds()

    n_nb = np.mean([len(neighbor_list(c.positions, c.cell, 5.0)[1]) / c.natoms for c in cells])
    cases = {
        'nonmagnetic E+F+S': (nonmag, {'symmetric': False}),
        'magnetic E+F+S+T': (mag, {'symmetric': False}),
        'magnetic E+F+S+T, symmetric (E(M)+E(-M))/2': (mag, {'symmetric': True}),
        'dE/dtheta (magnetic, with E+F+S+T)': (mag, {'symmetric': False, 'gradient': True}),
    }
    max_threads = numba.get_num_threads()
    results = {}
    for threads in sorted({1, min(2, max_threads)}):
        numba.set_num_threads(threads)
        fns = {name: (lambda c, pot=pot, kw=kw: evaluate(pot, c, **kw)) for name, (pot, kw) in cases.items()}
        for name, us in time_per_atom(fns, cells, args.seconds).items():
            results.setdefault(name, {})[f'{threads} thread' + ('s' if threads > 1 else '')] = round(us, 2)
    numba.set_num_threads(max_threads)

    print(f'mMTP level 16, N_phi 8, two species, 64-atom CrN cells, {n_nb:.1f} neighbours per atom')
    print(f'parameters: {nonmag.n_params} non-magnetic, {mag.n_params} magnetic (N_psi 2)')
    print(
        f'numba compile (cold cache): {t_cold:.1f} s; '
        f'with the on-disk cache: import {t_import:.2f} s + first call {t_first:.2f} s'
    )
    print(f'{"work":48s} {"1 thread":>10s} {"2 threads":>10s}   anchors, 1 thread (us/atom)')
    for name, row in results.items():
        anchor = next((v for k, v in ANCHORS.items() if name.startswith(k.split(' (')[0])), {})
        anchor_text = ', '.join(f'{k} {v}' for k, v in anchor.items())
        one, two = row.get('1 thread', float('nan')), row.get('2 threads', float('nan'))
        print(f'{name:48s} {one:10.1f} {two:10.1f}   {anchor_text}')
    out = {
        'benchmark': 'efs',
        'units': 'microseconds per atom per evaluation',
        'setup': {'level': 16, 'n_phi': 8, 'n_psi': 2, 'r_cut': 5.0, 'atoms_per_cell': 64,
                  'neighbours_per_atom': round(float(n_nb), 1), 'cpu': platform.processor() or platform.machine()},
        'compile_seconds_cold_cache': round(t_cold, 2),
        'first_call_seconds_cached': round(t_first, 3),
        'import_seconds': round(t_import, 3),
        'results': results,
        'anchors_one_thread': ANCHORS,
    }  # fmt: skip
    from report import write_json  # benchmarks/report.py, beside this script

    write_json(__file__, out)


if __name__ == '__main__':
    main()
