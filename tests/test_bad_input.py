"""Bad input raises an error that names the file, line or atom."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from conftest import crn_cells, random_potential

from aiida_mmtp.mtp.calculator import MtpCalculator
from aiida_mmtp.mtp.evaluate import evaluate


@pytest.fixture(scope='module')
def pot():
    return random_potential(level=8, n_psi=2, seed=2)


def test_unknown_species_type(pot):
    cfg = crn_cells()['cubic8']
    cfg.types[5] = 2
    with pytest.raises(ValueError, match='atom 6 has species type 2, but the potential has 2 species'):
        evaluate(pot, cfg)


def test_unknown_species_symbol(pot):
    atoms = bulk('FeAl', 'cesiumchloride', a=2.9)
    atoms.set_initial_magnetic_moments([2.0, 0.0])
    atoms.calc = MtpCalculator(pot)
    with pytest.raises(ValueError, match=r'atom 1 is Fe, which is not a species of the potential \(Cr, N\)'):
        atoms.get_potential_energy()


def test_nan_position(pot):
    cfg = crn_cells()['cubic8']
    cfg.positions[3, 1] = np.nan
    with pytest.raises(ValueError, match='atom 4 has a non-finite position'):
        evaluate(pot, cfg)


def test_overlapping_atoms(pot):
    cfg = crn_cells()['cubic8']
    cfg.positions[7] = cfg.positions[2] + [0.3, 0.2, 0.0]
    with pytest.raises(ValueError, match=r'atoms 3 and 8 are 0\.3606 A apart, closer than half the potential min_dist'):
        evaluate(pot, cfg)


def test_missing_moments_for_magnetic_potential(pot):
    cfg = crn_cells()['cubic8']
    cfg.moments = None
    with pytest.raises(ValueError, match='no magnetic moments, but the potential is magnetic'):
        evaluate(pot, cfg)


def test_singular_cell(pot):
    cfg = crn_cells()['cubic8']
    cfg.cell[2] = cfg.cell[0]
    with pytest.raises(ValueError, match='singular'):
        evaluate(pot, cfg)
