"""An engine-level active-learning run driven only by ``mmtp`` commands (``mmtp demo``).

Synthetic CrN-like problem: the analytic magnetic pair potential
(:mod:`.reference`) labels 8-atom B1 cells exactly, playing the part of
constrained DFT (``mmtp label-ref``). Each round: build the active set, grade
a moment equilibration and an 800 K MD of AFM, FM and a random 50/50 state at
three lattice parameters, select by maxvol, label, refit; stop when nothing is
selected. The commands are the ones AiiDA CalcJobs run on compute nodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cfg_io import read_cfg, write_cfg
from .fit import errors
from .loss import TrainingData
from .mtp_io import read_mtp
from .structures import random_collinear_moments, rattle, rocksalt

__all__ = ['DemoResult', 'make_inputs', 'run_demo']

ERROR_KEYS = ('energy_per_atom_meV', 'forces_meV_per_A', 'stress_GPa', 'mag_forces_meV_per_muB')


@dataclass
class DemoResult:
    """Selected configurations per round and test-set RMSEs of the initial and the final potential."""

    selected: list[int] = field(default_factory=list)
    training_size: int = 0
    errors_initial: dict = field(default_factory=dict)
    errors_final: dict = field(default_factory=dict)


def mmtp(*args, cwd: Path) -> str:
    """Run one ``mmtp`` command in ``cwd``; raise with its output if it fails."""
    r = subprocess.run(
        [sys.executable, '-m', 'aiida_mmtp.mtp.cli', *map(str, args)], cwd=cwd, capture_output=True, text=True
    )
    if r.returncode != 0:
        raise RuntimeError(f'mmtp {" ".join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}')
    return r.stdout


def make_inputs(work: Path, seed: int = 0) -> None:
    """start.cfg (9 ideal cells), initial.cfg (9 perturbed cells), test_in.cfg (30 independent cells)."""
    rng = np.random.default_rng(seed)
    types = rocksalt(4.15).types
    states = [
        np.array([2.4, 0, -2.4, 0, 2.4, 0, -2.4, 0.0]),  # AFM
        np.array([2.4, 0.0] * 4),  # FM
        random_collinear_moments(types, {0: 2.4}, rng),  # random 50/50
    ]
    start, initial, test = [], [], []
    for a in (4.10, 4.15, 4.20):
        for m in states:
            cfg = rocksalt(a)
            cfg.moments = m.copy()
            start.append(cfg)
            r = rattle(cfg, 0.05, rng)
            r.moments = m * rng.uniform(0.85, 1.15, 8)
            initial.append(r)
    # independent test set from the region the loop explores (800 K-like distortions, moments +-15%)
    test_rng = np.random.default_rng(seed + 12345)
    for k in range(30):
        s = start[k % len(start)]
        r = rattle(s, 0.15, test_rng)
        r.moments = s.moments * test_rng.uniform(0.85, 1.15, 8)
        test.append(r)
    write_cfg(start, work / 'start.cfg')
    write_cfg(initial, work / 'initial.cfg')
    write_cfg(test, work / 'test_in.cfg')


def _n_configs(path: Path) -> int:
    return path.read_text().count('BEGIN_CFG') if path.exists() else 0


def run_demo(work: str | os.PathLike, *, max_rounds: int = 10, md_steps: int = 40, max_select: int = 8,
             log=print) -> DemoResult:  # fmt: skip
    """Run the loop in ``work`` (created if needed); returns what it did."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    result = DemoResult()
    make_inputs(work)
    mmtp('label-ref', 'initial.cfg', 'train.cfg', cwd=work)
    mmtp('label-ref', 'test_in.cfg', 'test.cfg', cwd=work)
    mmtp('new', 'pot.mtp', '--level', 10, '--species', 'Cr', 'N', '--radial-basis-size', 6,
         '--magnetic-basis-size', 2, '--m-max', 3.2, 0.5, cwd=work)  # fmt: skip
    mmtp('train', 'pot.mtp', 'train.cfg', 'pot.mtp', '--max-iter', 500, '--report', 'fit_0.json', cwd=work)
    (work / 'pot_initial.mtp').write_bytes((work / 'pot.mtp').read_bytes())
    log(f'initial fit on {_n_configs(work / "train.cfg")} configurations')
    for rnd in range(1, max_rounds + 1):
        mmtp('select', 'pot.mtp', '--train', 'train.cfg', cwd=work)
        mmtp('equilibrate', 'pot.mtp', 'start.cfg', '--preselected', 'pre_eq.cfg', '--report', 'eq.json', cwd=work)
        md_args = ['--steps', md_steps, '--temperature', 800, '--timestep', 2, '--seed', rnd]
        md_out = ['--preselected', 'pre_md.cfg', '--trajectory', f'md_{rnd}.xyz', '--report', 'md.json']
        mmtp('md', 'pot.mtp', 'start.cfg', *md_args, *md_out, cwd=work)
        write_cfg(read_cfg(work / 'pre_eq.cfg') + read_cfg(work / 'pre_md.cfg'), work / 'pre.cfg')
        mmtp('select', 'pot.mtp', '--candidates', 'pre.cfg', '--selected', 'sel.cfg', '--max', max_select, cwd=work)
        n_sel = _n_configs(work / 'sel.cfg')
        result.selected.append(n_sel)
        md = json.loads((work / 'md.json').read_text())
        stops = sum(r['stop_reason'] == 'extrapolation' for r in md['runs'])
        log(f'round {rnd}: {_n_configs(work / "pre.cfg")} preselected, max grade {md["max_grade"]:.3g}, '
            f'{stops} of {len(md["runs"])} MD runs stopped by extrapolation, {n_sel} selected')  # fmt: skip
        if n_sel == 0:
            break
        mmtp('label-ref', 'sel.cfg', 'labelled.cfg', cwd=work)
        with (work / 'train.cfg').open('a') as handle:
            handle.write((work / 'labelled.cfg').read_text())
        mmtp('train', 'pot.mtp', 'train.cfg', 'pot.mtp', '--max-iter', 500, '--report', f'fit_{rnd}.json', cwd=work)
    result.training_size = _n_configs(work / 'train.cfg')
    test = read_cfg(work / 'test.cfg')
    for name, attr in (('pot_initial.mtp', 'errors_initial'), ('pot.mtp', 'errors_final')):
        pot = read_mtp(work / name)
        err = errors(pot, TrainingData(test, pot))
        setattr(result, attr, {k: err[k]['rmse'] for k in ERROR_KEYS})
    (work / 'summary.json').write_text(json.dumps(result.__dict__, indent=2) + '\n')
    return result
