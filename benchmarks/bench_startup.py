"""Benchmark: what a ``mmtp`` process costs before its first configuration (issue 16's start-up gap).

Whole processes, ``-n`` runs each after one warm-up: ``mmtp info`` (imports and argument parsing only) and
``mmtp calc-efs`` of one 64-atom CrN cell at level 16 (imports, numba's on-disk cache load, one evaluation),
with wall and CPU seconds (median, min, max; CPU from the OS accounting of the finished child). Then, in a
fresh process, the parts: importing ``aiida_mmtp.mtp.cli``, the first evaluation (cache load) and a second one.
Prints the figures and writes ``bench_startup.json`` beside this file.

    python benchmarks/bench_startup.py [-n 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: MLIP-3 on this machine kind (shared/docs/mtp.md): it is faster end to end below ~50 configurations because
#: a ``mmtp`` process spent ~1.0 CPU s before its first configuration (measured before the lazy package imports).
BEFORE_CPU_SECONDS = 1.0


#: the parts, timed in a fresh process: imports of the CLI, the first evaluation (numba cache load), a second one
_PARTS = """
import json, sys, time
t0 = time.perf_counter()
import aiida_mmtp.mtp.cli
from aiida_mmtp.mtp.cfg_io import read_cfg
from aiida_mmtp.mtp.evaluate import evaluate
from aiida_mmtp.mtp.mtp_io import read_mtp
t1 = time.perf_counter()
pot, cfg = read_mtp(sys.argv[1]), read_cfg(sys.argv[2])[0]
evaluate(pot, cfg)
t2 = time.perf_counter()
evaluate(pot, cfg)
t3 = time.perf_counter()
print(json.dumps({'imports': t1 - t0, 'first evaluation (reads, numba cache load)': t2 - t1,
                  'second evaluation': t3 - t2}))
"""


def _timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + sys) seconds of one finished child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _stats(values: list[float]) -> dict:
    return {'median': float(np.median(values)), 'min': float(min(values)), 'max': float(max(values))}


def main() -> None:
    from report import write_json

    from aiida_mmtp.mtp.cfg_io import write_cfg
    from aiida_mmtp.mtp.mtp_io import write_mtp
    from aiida_mmtp.mtp.potential import Potential
    from aiida_mmtp.mtp.structures import random_collinear_moments, rattle, rocksalt, supercell

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('-n', type=int, default=7, help='counted runs per command')
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    cfg = rattle(supercell(rocksalt(4.15), (2, 2, 2)), 0.1, rng)
    cfg.moments = random_collinear_moments(cfg.types, {0: 2.4}, rng)
    pot = Potential.from_level(16, ['Cr', 'N'], n_phi=8, n_psi=2, m_max=[3.2, 0.1])
    theta = pot.get_params()
    theta[pot.n_radial_params :] = rng.uniform(-0.1, 0.1, theta.size - pot.n_radial_params)
    pot.set_params(theta)
    work = Path(tempfile.mkdtemp())
    write_mtp(pot, work / 'pot.mtp')
    write_cfg([cfg], work / 'one.cfg')

    env = {**os.environ, 'NUMBA_NUM_THREADS': '1', 'OMP_NUM_THREADS': '1'}
    mmtp = [sys.executable, '-m', 'aiida_mmtp.mtp.cli']
    commands = {
        'mmtp info': [*mmtp, 'info', str(work / 'pot.mtp')],
        'mmtp calc-efs (one 64-atom cell)': [
            *mmtp,
            'calc-efs',
            str(work / 'pot.mtp'),
            str(work / 'one.cfg'),
            str(work / 'out.cfg'),
        ],  # fmt: skip
    }
    os.environ.update(env)
    figures = {'benchmark': 'startup', 'runs': args.n, 'cpu': platform.machine(), 'cores': os.cpu_count(),
               'before_cpu_seconds': BEFORE_CPU_SECONDS, 'whole_process': {}}  # fmt: skip
    for name, command in commands.items():
        _timed(command)  # warm-up: fills numba's on-disk cache on a fresh checkout
        walls, cpus = zip(*(_timed(command) for _ in range(args.n)))
        figures['whole_process'][name] = {'wall_s': _stats(list(walls)), 'cpu_s': _stats(list(cpus))}
        print(f'{name:34s} wall {np.median(walls):.3f} s (min {min(walls):.3f}), CPU {np.median(cpus):.3f} s')

    child = subprocess.run([sys.executable, '-c', _PARTS, str(work / 'pot.mtp'), str(work / 'one.cfg')], check=True,
                           capture_output=True, text=True)  # fmt: skip
    parts = json.loads(child.stdout)
    figures['in_process_s'] = parts
    for name, seconds in parts.items():
        print(f'  {name:40s} {seconds:.3f} s')
    write_json(__file__, figures)


if __name__ == '__main__':
    main()
