"""Shared fixtures: random potentials and distorted, randomly magnetised CrN cells."""

from __future__ import annotations

import functools
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from aiida_mmtp.mtp.configuration import Configuration
from aiida_mmtp.mtp.potential import Potential
from aiida_mmtp.mtp.structures import random_collinear_moments, rattle, rocksalt, supercell

pytest_plugins = ['aiida.tools.pytest_fixtures']  # aiida_profile: a throwaway SQLite profile, no services

REFERENCE = Path(__file__).resolve().parents[1].parent / 'shared' / 'reference'
if not REFERENCE.exists():  # CI clones main with shared/ beside it
    REFERENCE = Path(os.environ.get('MMTP_SHARED', '/work/shared')) / 'reference'


def random_potential(level: int = 10, n_psi: int = 2, seed: int = 0, symmetric: bool = False) -> Potential:
    """A potential with every coefficient random and non-zero (Cr, N)."""
    pot = Potential.from_level(
        level, ['Cr', 'N'], n_psi=n_psi, m_max=[3.2, 0.6] if n_psi > 1 else None, seed=seed, symmetric=symmetric
    )
    rng = np.random.default_rng(seed + 1000)
    theta = pot.get_params()
    nr = pot.n_radial_params
    theta[nr:] = rng.uniform(-0.5, 0.5, size=theta.size - nr)
    pot.set_params(theta)
    return pot


def magnetic_crn(cfg: Configuration, seed: int, amplitude: float = 0.15) -> Configuration:
    """Rattle a CrN cell and give Cr random signed moments (1.5-3 mu_B), N small ones."""
    rng = np.random.default_rng(seed)
    out = rattle(cfg, amplitude, rng)
    moments = random_collinear_moments(out.types, {0: 1.0}, rng)
    moments[out.types == 0] *= rng.uniform(1.5, 3.0, size=(out.types == 0).sum())
    moments[out.types == 1] = rng.uniform(-0.3, 0.3, size=(out.types == 1).sum())
    out.moments = moments
    return out


def crn_cells() -> dict[str, Configuration]:
    """Test cells: cubic 8-atom, a sheared (triclinic) 8-atom, and the 2-atom primitive cell (< 2 R_cut)."""
    cubic = magnetic_crn(rocksalt(4.15), seed=1)
    sheared = rocksalt(4.15)
    deform = np.array([[1.02, 0.05, -0.03], [0.0, 0.97, 0.06], [0.04, 0.0, 1.01]])
    sheared.positions = sheared.positions @ deform
    sheared.cell = sheared.cell @ deform
    sheared = magnetic_crn(sheared, seed=2)
    prim = magnetic_crn(rocksalt(4.15, primitive=True), seed=3, amplitude=0.1)
    return {'cubic8': cubic, 'triclinic8': sheared, 'primitive2': prim}


def reference_set(n: int, spacing: float = 0.02, amplitude: float = 0.15):
    """A TrainingSetData of ``n`` CrN cells (a = 4.1 + k * spacing A) labelled by the analytic reference."""
    from aiida_mmtp.data import TrainingSetData
    from aiida_mmtp.mtp.reference import MagneticPairPotential

    ref = MagneticPairPotential()
    configs = [ref.label(magnetic_crn(rocksalt(4.1 + spacing * k), seed=k, amplitude=amplitude)) for k in range(n)]
    return TrainingSetData(configs, ['Cr', 'N'], fidelity={'code': 'analytic reference'})


@functools.cache
def fitted_reference_potential(magnetic: bool = True) -> Potential:
    """A level-8 magnetic MTP (N_psi 3, symmetric) fitted to 40 B1 cells labelled by the analytic reference:
    lattice 3.95-4.35 A, rattled, random 50/50, FM and layered AFM moments (1.6-3 mu_B on Cr). Stable as a cubic
    FM or PM crystal with Cr moments near 2.2 mu_B; it never saw tetragonal strains.

    ``magnetic=False``: the same cells labelled by a reference whose Cr has no moment (its Landau term rises
    from m = 0, as plain-LDA CrN may): a potential that must come out non-magnetic."""
    from aiida_mmtp.mtp.fit import fit
    from aiida_mmtp.mtp.reference import MagneticPairPotential

    ref = MagneticPairPotential() if magnetic else MagneticPairPotential(landau_a=np.array([0.4, 2.0]))
    rng = np.random.default_rng(0)
    configs = []
    for k in range(40):
        cfg = rattle(rocksalt(rng.uniform(3.95, 4.35)), 0.05, rng)
        moments = random_collinear_moments(cfg.types, {0: 1.0}, rng, up_fraction=rng.choice([0.5, 1.0, 0.5]))
        if k % 3 == 2:
            moments = np.array([1.0, 0, -1, 0, -1, 0, 1, 0]) * rng.choice([1, -1])
        moments[cfg.types == 0] *= rng.uniform(1.6, 3.0, size=4)
        cfg.moments = moments
        configs.append(ref.label(cfg))
    pot = Potential.from_level(8, ['Cr', 'N'], n_phi=3, n_psi=3, m_max=[3.2, 0.6], symmetric=True)
    fit(pot, configs, max_iter=300)
    return pot


def fm_reference_cells(n: int) -> list:
    """``n`` rattled 8-atom FM cells (a = 4.05-4.25 A, Cr 1.8-2.6 mu_B up, N within +-0.2 mu_B) labelled by the
    analytic reference (seeded: the first cells are the same for every ``n``)."""
    from aiida_mmtp.mtp.reference import MagneticPairPotential

    ref, rng = MagneticPairPotential(), np.random.default_rng(0)
    configs = []
    for _ in range(n):
        cfg = rattle(rocksalt(rng.uniform(4.05, 4.25)), 0.05, rng)
        cfg.moments = np.where(cfg.types == 0, rng.uniform(1.8, 2.6, 8), rng.uniform(-0.2, 0.2, 8))
        configs.append(ref.label(cfg))
    return configs


POTENTIALS = Path(__file__).resolve().parent / 'data' / 'potentials'


def stored_potential(name: str) -> Potential:
    """A fitted potential kept in ``tests/data/potentials`` (written by its ``make.py``): tests that grade, select
    or run spin moves need a potential, and a fit run here would end where this machine's round-off sends it."""
    from aiida_mmtp.mtp.mtp_io import read_mtp

    return read_mtp(POTENTIALS / name)


@functools.cache
def fm_fitted_potential():
    """A level-6 magnetic MTP (symmetric) fitted to 16 rattled 8-atom FM cells of the analytic reference (a = 4.05-4.25
    A, Cr 1.8-2.6 mu_B up, N within +-0.2 mu_B; 200 iterations, ``tests/data/potentials/fm_cells16.mtp``), and
    those labelled cells: a potential that never saw a flipped moment."""
    return stored_potential('fm_cells16.mtp'), fm_reference_cells(16)


@pytest.fixture
def mmtp_code(aiida_code_installed):
    """The engine's ``mmtp`` command of this environment as a localhost code."""
    exe = Path(sys.executable).with_name('mmtp')
    return aiida_code_installed(label='mmtp', default_calc_job_plugin='mmtp.train', filepath_executable=str(exe))


@pytest.fixture(scope='session')
def reference_dir() -> Path:
    if not REFERENCE.exists():
        pytest.fail(f'shared reference data not found at {REFERENCE}')
    return REFERENCE


__all__ = [
    'crn_cells',
    'fitted_reference_potential',
    'fm_fitted_potential',
    'fm_reference_cells',
    'magnetic_crn',
    'random_potential',
    'reference_set',
    'supercell',
]


@pytest.fixture
def codes(aiida_code_installed, aiida_profile):
    """The localhost ABINIT code (with the NC pseudopotential family installed) and the engine's ``mmtp``."""
    from aiida_mmtp.data.pseudo import install_nc_family

    exe = shutil.which('abinit')
    if exe is None:
        pytest.fail('ABINIT is not installed: scripts/bootstrap.sh installs it (apt-get install abinit abinit-data)')
    install_nc_family()
    abinit = aiida_code_installed(label='abinit', default_calc_job_plugin='mmtp.abinit.cdft', filepath_executable=exe,
                                  prepend_text='export OMP_NUM_THREADS=1')  # fmt: skip
    mmtp = aiida_code_installed(label='mmtp', default_calc_job_plugin='mmtp.train',
                                filepath_executable=str(Path(sys.executable).with_name('mmtp')))  # fmt: skip
    return abinit, mmtp
