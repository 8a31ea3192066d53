"""Benchmark: how the engine scales with the cell size, PM CrN from 64 to 32768 atoms.

The potential and cells of ``bench_efs.py`` (level 16, N_phi 8, N_psi 2, R_cut 5 A; rock-salt CrN, a = 4.15 A,
rattled by 0.1 A, Cr moments +-2.4 mu_B with random signs, half up, times 0.85-1.15), as 2x2x2 to 16x16x16
supercells. For each size, in a fresh process:

* the neighbour-list build, cell list (``neighbor_list``) and, up to 4096 atoms, the former all-pairs loop;
* magnetic E+F+S+T (plain energy, MLIP-3's E(M)), the list rebuilt at each call, and with the kept list of the
  same positions (what moment equilibration gets);
* the peak memory of one evaluation above the process's baseline (``resource.getrusage``, max RSS), and the
  peak of what numpy allocates (``tracemalloc``);

in microseconds (bytes) per atom, at 1 and 2 numba threads. Then MD of a 4096-atom PM cell (Langevin,
300 K, 2 fs), moments re-equilibrated at every step, every step graded against an active set, with the
fitted level-10 potential of ``bench_md.py`` (:func:`md_potential`).

Prints the figures and writes ``bench_scaling.json`` beside this file.

    python benchmarks/bench_scaling.py [--sizes 64 512 4096 32768] [--seconds 2] [--md-steps 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPEATS = {64: (2, 2, 2), 512: (4, 4, 4), 4096: (8, 8, 8), 32768: (16, 16, 16)}
ALL_PAIRS_UP_TO = 4096  # the O(N^2) list beyond this takes minutes


def pm_crn(n_atoms: int, seed: int = 0, amplitude: float = 0.1):
    """A paramagnetic (random 50/50 Cr moments) rock-salt CrN supercell of ``n_atoms`` atoms, rattled by
    ``amplitude`` A."""
    from aiida_mmtp.mtp.structures import random_collinear_moments, rattle, rocksalt, supercell

    rng = np.random.default_rng(seed)
    cfg = rattle(supercell(rocksalt(4.15), REPEATS[n_atoms]), amplitude, rng)
    moments = random_collinear_moments(cfg.types, {0: 2.4, 1: 0.05}, rng)
    cfg.moments = moments * rng.uniform(0.85, 1.15, size=moments.shape)
    return cfg


def best_seconds(fn, seconds: float, rounds: int = 3) -> float:
    """Best of ``rounds`` rounds of repeated calls (at least one call a round), seconds per call."""
    best = np.inf
    for _ in range(rounds):
        calls = 0
        t0 = time.perf_counter()
        while calls == 0 or time.perf_counter() - t0 < seconds / rounds:
            fn()
            calls += 1
        best = min(best, (time.perf_counter() - t0) / calls)
    return float(best)


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


def one_size(n_atoms: int, seconds: float) -> dict:
    """The figures of one cell size (run in a fresh process, so that max RSS is this size's)."""
    import numba
    from bench_efs import trained_like

    from aiida_mmtp.mtp import neighbors
    from aiida_mmtp.mtp.evaluate import evaluate
    from aiida_mmtp.mtp.neighbors import neighbor_list

    pot = trained_like(2)
    small = pm_crn(64, seed=1)
    evaluate(pot, small, symmetric=False)  # numba kernels from the cache, neighbour-list kernels too
    neighbor_list(small.positions, small.cell, pot.r_cut, method='cells', reuse=False)
    cfg = pm_crn(n_atoms)
    per_atom = 1e6 / n_atoms
    out: dict = {'atoms': n_atoms}

    neighbors.KEEP_RECENT = 0  # measure the memory of one evaluation with its own list
    base = max_rss_bytes()
    tracemalloc.start()
    evaluate(pot, cfg, symmetric=False)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out['peak_rss_bytes_per_atom'] = round((max_rss_bytes() - base) / n_atoms)
    out['peak_numpy_bytes_per_atom'] = round(traced / n_atoms)
    offsets, _, _ = neighbor_list(cfg.positions, cfg.cell, pot.r_cut, reuse=False)
    out['neighbours_per_atom'] = round(offsets[-1] / n_atoms, 1)

    max_threads = numba.get_num_threads()
    for threads in sorted({1, min(2, max_threads)}):
        numba.set_num_threads(threads)
        row = {}
        row['neighbour list, cell list'] = best_seconds(
            lambda: neighbor_list(cfg.positions, cfg.cell, pot.r_cut, method='cells', reuse=False), seconds
        )
        if n_atoms <= ALL_PAIRS_UP_TO:
            row['neighbour list, all pairs (before)'] = best_seconds(
                lambda: neighbor_list(cfg.positions, cfg.cell, pot.r_cut, method='pairs', reuse=False), seconds
            )
        neighbors.KEEP_RECENT = 0
        row['magnetic E+F+S+T, list rebuilt'] = best_seconds(lambda: evaluate(pot, cfg, symmetric=False), seconds)
        neighbors.KEEP_RECENT = 2
        row['magnetic E+F+S+T, list kept'] = best_seconds(lambda: evaluate(pot, cfg, symmetric=False), seconds)
        out[f'{threads} thread' + ('s' if threads > 1 else '')] = {k: round(v * per_atom, 2) for k, v in row.items()}
    numba.set_num_threads(max_threads)

    t0 = time.perf_counter()
    from aiida_mmtp.mtp.structures import min_distance

    min_distance(cfg)
    out['min_distance_us_per_atom'] = round((time.perf_counter() - t0) * per_atom, 2)
    return out


def md_potential():
    """The graded-MD setup of ``bench_md.py``: level 10 (306 parameters) fitted to the engine demo's nine
    8-atom cells labelled by the analytic reference, and its active set. (The random-coefficient level-16
    potential above is fine for timing one evaluation, but MD with it collapses atoms within a few steps.)"""
    import tempfile

    from aiida_mmtp.mtp.cfg_io import read_cfg
    from aiida_mmtp.mtp.demo import make_inputs
    from aiida_mmtp.mtp.fit import fit
    from aiida_mmtp.mtp.potential import Potential
    from aiida_mmtp.mtp.reference import MagneticPairPotential
    from aiida_mmtp.mtp.selection import ActiveSet

    with tempfile.TemporaryDirectory() as tmp:
        make_inputs(Path(tmp))
        initial = read_cfg(Path(tmp) / 'initial.cfg')
    training = [MagneticPairPotential().label(cfg) for cfg in initial]
    pot = Potential.from_level(10, ['Cr', 'N'], n_phi=6, n_psi=2, m_max=[3.2, 0.5])
    fit(pot, training, max_iter=300)
    return pot, ActiveSet.build(pot, training)


def md_rate(n_atoms: int, steps: int) -> dict:
    """MD steps per second: the force call of each step of ``run_md``, moments equilibrated and graded.

    ``run_md`` itself cannot be timed here: with the small demo fit, a PM supercell has atoms pushed below
    R_min within one or two steps (seen at 512 atoms, 300 and 800 K), which stops the run. So this times
    what ``run_md`` does at every step through the same calculator (``GradedCalculator``: moments
    re-equilibrated from the last ones, L-BFGS-B to 1e-5 eV/mu_B, then a graded evaluation with dE/dtheta),
    the atoms moved by 0.01 A (Gaussian, per component) between calls, as in a 2 fs step at 300-800 K. The
    Langevin update itself (numpy on N x 3 arrays) is left out; it is far below a millisecond.
    """
    from aiida_mmtp.mtp import simulate
    from aiida_mmtp.mtp.ase_io import configuration_to_atoms
    from aiida_mmtp.mtp.simulate import GradedCalculator, Grader, moment_signs

    pot, active_set = md_potential()
    calls = {'n': 0}
    evaluate_model = simulate.evaluate_model

    def counted(*args, **kwargs):
        calls['n'] += 1
        return evaluate_model(*args, **kwargs)

    simulate.evaluate_model = counted
    rng = np.random.default_rng(2)
    cfg = pm_crn(n_atoms, amplitude=0.03)
    atoms = configuration_to_atoms(cfg.clear_labels(), pot.species)
    grader = Grader(pot, active_set, gamma_low=1e8, gamma_up=1e9)  # grade every step, never stop
    calc = GradedCalculator(pot, grader, equilibrate=True)
    calc.moments, calc.signs = cfg.moments.copy(), moment_signs(cfg.moments)
    atoms.calc = calc
    calc.eq_tol = 1e-3  # the start, from the random 50/50 moments: loosely (the untimed part, hundreds of calls)
    t0 = time.perf_counter()
    atoms.get_forces()
    start = time.perf_counter() - t0
    start_evaluations = calls['n']
    calc.eq_tol = 1e-5  # run_md's tolerance for the timed steps
    t0 = time.perf_counter()
    for _ in range(steps):
        atoms.positions = atoms.positions + rng.normal(0.0, 0.01, atoms.positions.shape)
        atoms.get_forces()
    seconds = time.perf_counter() - t0
    simulate.evaluate_model = evaluate_model
    return {
        'atoms': n_atoms,
        'potential': f'level 10, {pot.n_params} parameters, fitted as in bench_md.py; graded every step',
        'steps_timed': steps,
        'seconds_per_step': round(seconds / steps, 2),
        'steps_per_second': round(steps / seconds, 4),
        'evaluations_per_step': round((calls['n'] - start_evaluations) / steps, 1),
        'start_seconds (equilibration to 1e-3 eV/mu_B)': round(start, 2),
        'start_evaluations': start_evaluations,
        'max_grade': round(grader.max_grade, 3),
        'symmetric_energy': bool(pot.symmetric),
        'what': 'the force call of each MD step (GradedCalculator), not run_md: see md_rate',
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=list(REPEATS), choices=list(REPEATS))
    parser.add_argument('--seconds', type=float, default=2.0, help='time per measurement')
    parser.add_argument('--md-steps', type=int, default=2, help='MD steps timed (0: no MD)')
    parser.add_argument('--md-atoms', type=int, default=4096, choices=list(REPEATS))
    parser.add_argument('--one', type=int, help=argparse.SUPPRESS)  # internal: one size, JSON on stdout
    parser.add_argument('--md', action='store_true', help=argparse.SUPPRESS)  # internal: the MD figure
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    if args.one:
        print(json.dumps(one_size(args.one, args.seconds)))
        return
    if args.md:
        print(json.dumps(md_rate(args.md_atoms, args.md_steps)))
        return

    def child(*extra: str) -> dict:
        cmd = [sys.executable, __file__, '--seconds', str(args.seconds), *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ))
        return json.loads(done.stdout.strip().splitlines()[-1])

    sizes = []
    for n in args.sizes:
        t0 = time.perf_counter()
        sizes.append(child('--one', str(n)))
        print(f'{n} atoms: {time.perf_counter() - t0:.0f} s', file=sys.stderr, flush=True)
    md = child('--md', '--md-atoms', str(args.md_atoms), '--md-steps', str(args.md_steps)) if args.md_steps else None

    print('PM CrN, level 16, N_phi 8, N_psi 2, R_cut 5 A; microseconds per atom (1 thread / 2 threads)')
    names = list(sizes[0]['1 thread'])
    print(f'{"atoms":>6s} {"nbrs":>5s} ' + ' '.join(f'{name[:34]:>34s}' for name in names) + '  peak RSS B/atom')
    for row in sizes:
        cells = []
        for name in names:
            a, b = row['1 thread'].get(name), row.get('2 threads', {}).get(name)
            cells.append('-' if a is None else f'{a:.2f} / {b:.2f}' if b is not None else f'{a:.2f}')
        text = ' '.join(f'{c:>34s}' for c in cells)
        print(f'{row["atoms"]:6d} {row["neighbours_per_atom"]:5.1f} {text}  {row["peak_rss_bytes_per_atom"]:>8d}')
    if md:
        print(f'MD, {md["atoms"]} atoms, moments equilibrated and graded every step: {md["steps_per_second"]} steps/s '
              f'({md["seconds_per_step"]} s/step, {md["evaluations_per_step"]} evaluations/step)')  # fmt: skip
    out = {
        'benchmark': 'scaling',
        'units': 'microseconds per atom per call; bytes per atom',
        'setup': {'level': 16, 'n_phi': 8, 'n_psi': 2, 'r_cut': 5.0, 'cells': 'PM CrN rock salt, a = 4.15 A',
                  'cpu': platform.processor() or platform.machine(), 'cores': os.cpu_count()},
        'notes': 'shared 2-core machine: an ABINIT study and other work ran beside it, so the 2-thread figures '
                 'especially are upper bounds; run once',
        'sizes': sizes,
        'md': md,
    }  # fmt: skip
    from report import write_json  # benchmarks/report.py, beside this script

    write_json(__file__, out)


if __name__ == '__main__':
    main()
