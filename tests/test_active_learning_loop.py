"""A complete active-learning loop driven only by `mmtp` commands converges and improves the potential.

Synthetic problem: the analytic magnetic pair potential labels 8-atom CrN-like
cells exactly (`mmtp label-ref` plays the part of cDFT). Each round grades a
moment equilibration and an 800 K MD of AFM, FM and random states at three
lattice parameters, selects by maxvol, labels, refits, until nothing is selected.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from aiida_mmtp.mtp.cfg_io import read_cfg, write_cfg
from aiida_mmtp.mtp.fit import errors
from aiida_mmtp.mtp.loss import TrainingData
from aiida_mmtp.mtp.mtp_io import read_mtp
from aiida_mmtp.mtp.structures import random_collinear_moments, rattle, rocksalt


def mmtp(*args, cwd):
    r = subprocess.run([sys.executable, '-m', 'aiida_mmtp.mtp.cli', *map(str, args)], cwd=cwd, capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 0, f'mmtp {" ".join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}'
    return r.stdout


def n_configs(path) -> int:
    return path.read_text().count('BEGIN_CFG') if path.exists() else 0


def make_inputs(work):
    rng = np.random.default_rng(0)
    types = rocksalt(4.15).types
    states = [np.array([2.4, 0, -2.4, 0, 2.4, 0, -2.4, 0.0]), np.array([2.4, 0.0] * 4),
              random_collinear_moments(types, {0: 2.4}, rng)]  # fmt: skip
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
    test_rng = np.random.default_rng(12345)
    for k in range(30):
        s = start[k % len(start)]
        r = rattle(s, 0.15, test_rng)
        r.moments = s.moments * test_rng.uniform(0.85, 1.15, 8)
        test.append(r)
    write_cfg(start, work / 'start.cfg')
    write_cfg(initial, work / 'initial.cfg')
    write_cfg(test, work / 'test_in.cfg')


def test_active_learning_loop_converges(tmp_path):
    make_inputs(tmp_path)
    mmtp('label-ref', 'initial.cfg', 'train.cfg', cwd=tmp_path)
    mmtp('label-ref', 'test_in.cfg', 'test.cfg', cwd=tmp_path)
    mmtp('new', 'pot.mtp', '--level', 10, '--species', 'Cr', 'N', '--radial-basis-size', 6,
         '--magnetic-basis-size', 2, '--m-max', 3.2, 0.5, cwd=tmp_path)  # fmt: skip
    mmtp('train', 'pot.mtp', 'train.cfg', 'pot.mtp', '--max-iter', 500, cwd=tmp_path)
    (tmp_path / 'pot0.mtp').write_bytes((tmp_path / 'pot.mtp').read_bytes())

    selected = []
    for rnd in range(8):
        mmtp('select', 'pot.mtp', '--train', 'train.cfg', cwd=tmp_path)
        mmtp('equilibrate', 'pot.mtp', 'start.cfg', '--preselected', 'pre_eq.cfg', cwd=tmp_path)
        md_args = ['--steps', 40, '--temperature', 800, '--timestep', 2, '--seed', rnd]
        md_out = ['--preselected', 'pre_md.cfg', '--trajectory', 'md.xyz', '--report', 'md.json']
        mmtp('md', 'pot.mtp', 'start.cfg', *md_args, *md_out, cwd=tmp_path)
        candidates = read_cfg(tmp_path / 'pre_eq.cfg') + read_cfg(tmp_path / 'pre_md.cfg')
        write_cfg(candidates, tmp_path / 'pre.cfg')
        mmtp('select', 'pot.mtp', '--candidates', 'pre.cfg', '--selected', 'sel.cfg', '--max', 8, cwd=tmp_path)
        selected.append(n_configs(tmp_path / 'sel.cfg'))
        if selected[-1] == 0:
            break
        mmtp('label-ref', 'sel.cfg', 'labelled.cfg', cwd=tmp_path)
        with (tmp_path / 'train.cfg').open('a') as handle:
            handle.write((tmp_path / 'labelled.cfg').read_text())
        mmtp('train', 'pot.mtp', 'train.cfg', 'pot.mtp', '--max-iter', 500, cwd=tmp_path)

    assert selected[0] > 0, selected
    assert selected[-1] == 0, f'still selecting after {len(selected)} rounds: {selected}'
    assert (tmp_path / 'md.xyz').exists()

    test = read_cfg(tmp_path / 'test.cfg')
    before = read_mtp(tmp_path / 'pot0.mtp')
    after = read_mtp(tmp_path / 'pot.mtp')
    err_before = errors(before, TrainingData(test, before))
    err_after = errors(after, TrainingData(test, after))
    for key in ('energy_per_atom_meV', 'forces_meV_per_A', 'stress_GPa', 'mag_forces_meV_per_muB'):
        assert err_after[key]['rmse'] < err_before[key]['rmse'], (key, err_before[key], err_after[key], selected)
