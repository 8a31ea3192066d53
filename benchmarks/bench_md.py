"""Benchmark: graded MD of small cells, with one BLAS thread (what the engine does) and with all of them.

Nine 8-atom CrN-like cells (the engine demo's starting cells), a level-10 magnetic potential (306 parameters)
fitted to the demo's initial set, its active set; 800 K Langevin MD, moments equilibrated at every step, every
step graded (a 306-row grade against the active set), 40 steps per cell. The engine runs its simulations and
fits with BLAS limited to one thread (``aiida_mmtp.mtp.threads``): this measures why.

Prints the figures and writes ``bench_md.json`` beside this file.

    python benchmarks/bench_md.py [--steps 40]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path
from unittest import mock

import numba
from threadpoolctl import threadpool_info

from aiida_mmtp.mtp import threads
from aiida_mmtp.mtp.cfg_io import read_cfg
from aiida_mmtp.mtp.demo import make_inputs
from aiida_mmtp.mtp.fit import fit
from aiida_mmtp.mtp.potential import Potential
from aiida_mmtp.mtp.reference import MagneticPairPotential
from aiida_mmtp.mtp.selection import ActiveSet
from aiida_mmtp.mtp.simulate import Grader, run_md


def _md_seconds(md, pot, active_set, starts, steps: int) -> float:
    grader = Grader(pot, active_set, gamma_low=1e8, gamma_up=1e9)  # grade every step, never stop
    t0 = time.perf_counter()
    for k, cfg in enumerate(starts):
        grader.start_run()
        md(pot, cfg, grader, temperature=800.0, timestep=2.0, steps=steps, seed=k)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=40)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        make_inputs(Path(tmp))
        starts = read_cfg(Path(tmp) / 'start.cfg')
        initial = read_cfg(Path(tmp) / 'initial.cfg')
    ref = MagneticPairPotential()
    training = [ref.label(cfg) for cfg in initial]
    pot = Potential.from_level(10, ['Cr', 'N'], n_phi=6, n_psi=2, m_max=[3.2, 0.5])
    fit(pot, training, max_iter=300)
    active_set = ActiveSet.build(pot, training)
    _md_seconds(run_md, pot, active_set, starts[:1], 2)  # compile or load the kernels from the cache

    one = _md_seconds(run_md, pot, active_set, starts, args.steps)  # the engine: one BLAS thread
    with mock.patch.object(threads, 'threadpool_limits', lambda **_: contextlib.nullcontext()):
        every = _md_seconds(run_md, pot, active_set, starts, args.steps)  # BLAS on every core, as before
    steps = len(starts) * args.steps
    blas = [f'{info["internal_api"]} {info["num_threads"]} threads' for info in threadpool_info()
            if info['user_api'] == 'blas']  # fmt: skip
    result = {
        'benchmark': 'graded MD, 8-atom cells',
        'cells': len(starts),
        'steps_per_cell': args.steps,
        'parameters': pot.n_params,
        'numba_threads': numba.get_num_threads(),
        'blas': blas,
        'one_blas_thread': {'seconds': round(one, 2), 'ms_per_step': round(one / steps * 1e3, 2)},
        'all_blas_threads': {'seconds': round(every, 2), 'ms_per_step': round(every / steps * 1e3, 2)},
    }
    print(json.dumps(result, indent=2))
    (Path(__file__).with_suffix('.json')).write_text(json.dumps(result, indent=2) + '\n')


if __name__ == '__main__':
    main()
