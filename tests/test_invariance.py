"""Symmetries of the energy: rotation, translation, permutation, moment inversion; extensivity."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import crn_cells, random_potential, supercell
from scipy.spatial.transform import Rotation

from aiida_mmtp.mtp.evaluate import evaluate

CELLS = crn_cells()


@pytest.fixture(scope='module')
def pot():
    return random_potential(level=14, n_psi=2, seed=11, symmetric=True)


@pytest.mark.parametrize('name', list(CELLS))
def test_rotation(pot, name):
    cfg = CELLS[name]
    rot = Rotation.from_euler('zyx', [0.3, -1.1, 2.2]).as_matrix()
    turned = cfg.copy()
    turned.positions = cfg.positions @ rot.T
    turned.cell = cfg.cell @ rot.T
    a, b = evaluate(pot, cfg), evaluate(pot, turned)
    assert b.energy == pytest.approx(a.energy, rel=1e-12, abs=1e-10)
    assert np.allclose(b.forces, a.forces @ rot.T, atol=1e-9 * np.abs(a.forces).max())
    assert np.allclose(b.mag_forces, a.mag_forces, atol=1e-9 * np.abs(a.mag_forces).max())
    sa = _voigt_to_matrix(a.stress)
    assert np.allclose(_voigt_to_matrix(b.stress), rot @ sa @ rot.T, atol=1e-9 * np.abs(sa).max())


def _voigt_to_matrix(v):
    return np.array([[v[0], v[5], v[4]], [v[5], v[1], v[3]], [v[4], v[3], v[2]]])


@pytest.mark.parametrize('name', list(CELLS))
def test_translation_and_wrapping(pot, name):
    cfg = CELLS[name]
    moved = cfg.copy()
    moved.positions = cfg.positions + np.array([0.37, -1.21, 5.3])
    moved.positions[0] += cfg.cell[1] * 2  # an atom outside the cell is the same atom
    a, b = evaluate(pot, cfg), evaluate(pot, moved)
    assert b.energy == pytest.approx(a.energy, rel=1e-12)
    assert np.allclose(b.forces, a.forces, atol=1e-9 * np.abs(a.forces).max())


@pytest.mark.parametrize('name', list(CELLS))
def test_permutation(pot, name):
    cfg = CELLS[name]
    perm = np.random.default_rng(4).permutation(cfg.natoms)
    shuffled = cfg.copy()
    shuffled.positions = cfg.positions[perm]
    shuffled.types = cfg.types[perm]
    shuffled.moments = cfg.moments[perm]
    a, b = evaluate(pot, cfg), evaluate(pot, shuffled)
    assert b.energy == pytest.approx(a.energy, rel=1e-12)
    assert np.allclose(b.forces, a.forces[perm], atol=1e-9 * np.abs(a.forces).max())
    assert np.allclose(b.mag_forces, a.mag_forces[perm], atol=1e-9 * np.abs(a.mag_forces).max())
    assert np.allclose(b.site_energies, a.site_energies[perm])


@pytest.mark.parametrize('name', list(CELLS))
def test_global_moment_inversion(pot, name):
    cfg = CELLS[name]
    flipped = cfg.copy()
    flipped.moments = -cfg.moments
    a, b = evaluate(pot, cfg), evaluate(pot, flipped)
    assert b.energy == pytest.approx(a.energy, rel=1e-12)
    assert np.allclose(b.forces, a.forces, atol=1e-9 * np.abs(a.forces).max())
    assert np.allclose(b.stress, a.stress, atol=1e-9 * np.abs(a.stress).max())
    assert np.allclose(b.mag_forces, -a.mag_forces, atol=1e-9 * np.abs(a.mag_forces).max())
    # the plain (MLIP-3) energy is not inversion symmetric, and the symmetric one is its average
    pa, pb = evaluate(pot, cfg, symmetric=False), evaluate(pot, flipped, symmetric=False)
    assert abs(pa.energy - pb.energy) > 1e-6 * abs(pa.energy)
    assert a.energy == pytest.approx(0.5 * (pa.energy + pb.energy), rel=1e-12)


@pytest.mark.parametrize('name', ['cubic8', 'primitive2'])
def test_extensivity(pot, name):
    cfg = CELLS[name]
    big = supercell(cfg, (2, 2, 2))
    a, b = evaluate(pot, cfg), evaluate(pot, big)
    assert b.energy == pytest.approx(8 * a.energy, rel=1e-11)
    assert np.allclose(b.forces, np.tile(a.forces, (8, 1)), atol=1e-9 * np.abs(a.forces).max())
    assert np.allclose(b.mag_forces, np.tile(a.mag_forces, 8), atol=1e-9 * np.abs(a.mag_forces).max())
    assert np.allclose(b.stress, a.stress, atol=1e-9 * np.abs(a.stress).max())


def test_threads_give_the_same_numbers(pot):
    cfg = supercell(CELLS['cubic8'], (2, 1, 1))
    one = evaluate(pot, cfg, gradient=True, n_threads=1)
    two = evaluate(pot, cfg, gradient=True, n_threads=2)
    assert two.energy == pytest.approx(one.energy, rel=1e-13)
    assert np.allclose(two.grad, one.grad, rtol=1e-12, atol=1e-12 * np.abs(one.grad).max())


def test_strained_cells_keep_fractional_coordinates_and_strain_by_the_given_amount():
    from aiida_mmtp.mtp.structures import rocksalt, strained

    cfg = rocksalt(4.15)
    frac = np.linalg.solve(cfg.cell.T, cfg.positions.T).T
    normal = strained(cfg, 'xx', 0.01)
    assert np.allclose(normal.cell, np.diag([4.15 * 1.01, 4.15, 4.15]))
    assert np.allclose(np.linalg.solve(normal.cell.T, normal.positions.T).T, frac)
    shear = strained(cfg, 'yz', -0.02)
    eps = np.linalg.solve(cfg.cell, shear.cell) - np.eye(3)  # cell' = cell (1 + eps)^T, eps symmetric
    assert np.allclose(eps, eps.T) and eps[1, 2] == pytest.approx(-0.01) and abs(np.linalg.det(shear.cell)) == \
        pytest.approx(4.15**3 * (1 - 1e-4))  # fmt: skip
    with pytest.raises(ValueError, match="strain component 'zy': choose from xx, yy, zz, yz, xz, xy"):
        strained(cfg, 'zy', 0.01)
