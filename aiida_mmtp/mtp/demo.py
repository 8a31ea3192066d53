"""An engine-level active-learning run driven only by ``mmtp`` commands (``mmtp demo``).

Synthetic CrN-like problem: the analytic magnetic pair potential
(:mod:`.reference`) labels 8-atom B1 cells exactly, playing the part of
constrained DFT (``mmtp label-ref``). Each round: build the active set, grade
a moment equilibration and an 800 K MD of AFM, FM and a random 50/50 state at
three lattice parameters, select by maxvol, label, refit; stop when nothing is
selected. The commands are the ones AiiDA CalcJobs run on compute nodes.

With ``dlm_rounds`` the fixed-sign rounds also run MD of three 16-atom cells in
random 50/50 states (signs kept, as the paper's MD), and after them
a DLM-MD stage follows (the sign pattern redrawn every few steps; issue 15). Both
potentials are then tested on random magnetic 16-atom states that neither saw.
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
from .structures import random_collinear_moments, rattle, rocksalt, supercell

__all__ = ['DemoResult', 'make_inputs', 'run_demo']

ERROR_KEYS = ('energy_per_atom_meV', 'forces_meV_per_A', 'stress_GPa', 'mag_forces_meV_per_muB')


@dataclass
class DemoResult:
    """Selected configurations per round and test-set RMSEs of the initial and the final potential."""

    selected: list[int] = field(default_factory=list)
    training_size: int = 0
    errors_initial: dict = field(default_factory=dict)
    errors_final: dict = field(default_factory=dict)
    dlm_selected: list[int] = field(default_factory=list)
    errors_random_before_dlm: dict = field(default_factory=dict)
    errors_random_after_dlm: dict = field(default_factory=dict)


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
    # 16-atom cells (8 Cr: 70 balanced patterns, most of them not layerings): one random state per lattice
    # parameter to start MD from, and an independent test set of random states, rattled, moments +-15%
    start16, test16 = [], []
    for a in (4.10, 4.15, 4.20):
        cfg = supercell(rocksalt(a), (2, 1, 1))
        cfg.moments = random_collinear_moments(cfg.types, {0: 2.4}, rng)
        start16.append(cfg)
    random_rng = np.random.default_rng(seed + 54321)
    for _ in range(24):
        cfg = rattle(supercell(rocksalt(random_rng.uniform(4.10, 4.20)), (2, 1, 1)), 0.1, random_rng)
        cfg.moments = random_collinear_moments(cfg.types, {0: 2.4}, random_rng) * random_rng.uniform(0.85, 1.15, 16)
        test16.append(cfg)
    write_cfg(start16, work / 'start16.cfg')
    write_cfg(test16, work / 'test_random_in.cfg')


def _n_configs(path: Path) -> int:
    return path.read_text().count('BEGIN_CFG') if path.exists() else 0


def _test_errors(work: Path, potential: str, test: str) -> dict:
    """Test-set RMSEs (:data:`ERROR_KEYS`) of ``potential`` on the labelled ``test`` file in ``work``."""
    pot = read_mtp(work / potential)
    err = errors(pot, TrainingData(read_cfg(work / test), pot))
    return {k: err[k]['rmse'] for k in ERROR_KEYS}


def _round(work: Path, rnd: int, runs: list[tuple[str, list]], max_select: int, log, stage: str,
           neighborhoods: bool = False) -> int:  # fmt: skip
    """One round: grade each run (``mmtp`` command, arguments), select by maxvol (per-atom rows with
    ``neighborhoods``), label, refit. Returns the number selected (0: nothing labelled, the potential unchanged)."""
    mmtp('select', 'pot.mtp', '--train', 'train.cfg', *(['--neighborhoods'] if neighborhoods else []), cwd=work)
    preselected, grades, stops, n_runs = [], [0.0], 0, 0
    for k, (command, args) in enumerate(runs):
        mmtp(command, 'pot.mtp', *args, '--preselected', f'pre_{k}.cfg', '--report', f'run_{k}.json', cwd=work)
        preselected += read_cfg(work / f'pre_{k}.cfg') if (work / f'pre_{k}.cfg').exists() else []
        report = json.loads((work / f'run_{k}.json').read_text())
        grades.append(report['max_grade'])
        stops += sum(r['stop_reason'] == 'extrapolation' for r in report['runs'])
        n_runs += len(report['runs'])
    write_cfg(preselected, work / 'pre.cfg')
    mmtp('select', 'pot.mtp', '--candidates', 'pre.cfg', '--selected', 'sel.cfg', '--max', max_select, cwd=work)
    n_sel = _n_configs(work / 'sel.cfg')
    log(f'{stage} round {rnd}: {len(preselected)} preselected, max grade {max(grades):.3g}, {stops} of {n_runs} '
        f'runs stopped by extrapolation, {n_sel} selected')  # fmt: skip
    if n_sel:
        mmtp('label-ref', 'sel.cfg', 'labelled.cfg', cwd=work)
        with (work / 'train.cfg').open('a') as handle:
            handle.write((work / 'labelled.cfg').read_text())
        mmtp('train', 'pot.mtp', 'train.cfg', 'pot.mtp', '--max-iter', 500, '--report', f'fit_{stage}_{rnd}.json',
             cwd=work)  # fmt: skip
    return n_sel


def run_demo(work: str | os.PathLike, *, max_rounds: int = 10, md_steps: int = 40, max_select: int = 8,
             dlm_rounds: int = 0, neighborhoods: bool = False, log=print) -> DemoResult:  # fmt: skip
    """Run the loop in ``work`` (created if needed); returns what it did. ``dlm_rounds`` > 0 adds the 16-atom
    random states to the fixed-sign rounds and a DLM-MD stage of at most that many rounds after them (also
    when the fixed-sign rounds still selected in their last round);
    ``neighborhoods`` grades and selects by per-atom rows."""
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
    starts = ['start.cfg'] + (['start16.cfg'] if dlm_rounds else [])
    for rnd in range(1, max_rounds + 1):
        md_args = ['--steps', md_steps, '--temperature', 800, '--timestep', 2, '--seed', rnd]
        runs = [('equilibrate', [start]) for start in starts]
        runs += [('md', [start, *md_args] + (['--trajectory', f'md_{rnd}.xyz'] if start == 'start.cfg' else []))
                 for start in starts]  # fmt: skip
        n_sel = _round(work, rnd, runs, max_select, log, 'fixed-sign', neighborhoods)
        result.selected.append(n_sel)
        if n_sel == 0:
            break
    if dlm_rounds:  # after the fixed-sign rounds, converged or not (a campaign's stages run in turn)
        mmtp('label-ref', 'test_random_in.cfg', 'test_random.cfg', cwd=work)
        (work / 'pot_before_dlm.mtp').write_bytes((work / 'pot.mtp').read_bytes())
        for rnd in range(1, dlm_rounds + 1):
            md_args = ['--steps', md_steps, '--temperature', 800, '--timestep', 2, '--seed', 100 + rnd]
            dlm = ['--spin-moves', 'dlm', '--spin-every', 4]
            runs = [('md', ['start16.cfg', *md_args, *dlm])]
            n_sel = _round(work, rnd, runs, max_select, log, 'dlm-md', neighborhoods)
            result.dlm_selected.append(n_sel)
            if n_sel == 0:
                break
        result.errors_random_before_dlm = _test_errors(work, 'pot_before_dlm.mtp', 'test_random.cfg')
        result.errors_random_after_dlm = _test_errors(work, 'pot.mtp', 'test_random.cfg')
    result.training_size = _n_configs(work / 'train.cfg')
    result.errors_initial = _test_errors(work, 'pot_initial.mtp', 'test.cfg')
    result.errors_final = _test_errors(work, 'pot.mtp', 'test.cfg')
    (work / 'summary.json').write_text(json.dumps(result.__dict__, indent=2) + '\n')
    return result
