"""The ASE calculator agrees with the engine and with finite differences through ASE."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.fd import calculate_numerical_stress
from conftest import random_potential

from aiida_mmtp.mtp.ase_io import atoms_to_configuration
from aiida_mmtp.mtp.calculator import MtpCalculator
from aiida_mmtp.mtp.evaluate import evaluate


def _atoms():
    atoms = bulk('CrN', 'rocksalt', a=4.15, cubic=True)
    atoms.rattle(0.08, seed=3)
    rng = np.random.default_rng(0)
    atoms.set_initial_magnetic_moments(
        [rng.choice([-1, 1]) * rng.uniform(1.5, 3) if s == 'Cr' else 0.05 for s in atoms.get_chemical_symbols()]
    )
    return atoms


def test_calculator_results():
    pot = random_potential(level=10, n_psi=2, seed=4, symmetric=True)
    atoms = _atoms()
    atoms.calc = MtpCalculator(pot)
    e = atoms.get_potential_energy()
    res = evaluate(pot, atoms_to_configuration(atoms, pot.species))
    assert e == pytest.approx(res.energy, rel=1e-14)
    assert np.array_equal(atoms.get_forces(), res.forces)
    assert np.array_equal(atoms.get_stress(), res.stress)
    assert np.array_equal(atoms.calc.results['magnetic_forces'], res.mag_forces)
    assert atoms.get_potential_energies().sum() == pytest.approx(e, rel=1e-12)
    # ASE's own numerical stress agrees
    numeric = calculate_numerical_stress(atoms, eps=1e-6)
    assert np.allclose(numeric, atoms.get_stress(), rtol=1e-5, atol=1e-6 * np.abs(numeric).max())


def test_calculator_from_file_needs_species(tmp_path, reference_dir):
    with pytest.raises(ValueError, match='does not name its species'):
        MtpCalculator(reference_dir / 'mlip' / 'pot16_mag3.mtp')
    calc = MtpCalculator(reference_dir / 'mlip' / 'pot16_mag3.mtp', species=['Cr', 'N'], symmetric=False)
    atoms = _atoms()
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy())
    atoms.set_initial_magnetic_moments(-atoms.get_initial_magnetic_moments())
    assert np.isfinite(atoms.get_potential_energy())


def test_moments_required():
    atoms = _atoms()
    del atoms.arrays['initial_magmoms']
    atoms.calc = MtpCalculator(random_potential(level=6, n_psi=2))
    with pytest.raises(ValueError, match='set_initial_magnetic_moments'):
        atoms.get_potential_energy()
