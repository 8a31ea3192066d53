"""Analytic derivatives against central finite differences (relative error <= 1e-6)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import crn_cells, random_potential

from aiida_mmtp.mtp.evaluate import evaluate

CELLS = crn_cells()
TOL = 1e-6


def rel_err(numeric: np.ndarray, analytic: np.ndarray) -> float:
    return float(np.max(np.abs(numeric - analytic)) / np.max(np.abs(analytic)))


def energy(pot, cfg, symmetric):
    return evaluate(pot, cfg, symmetric=symmetric).energy


@pytest.fixture(scope='module', params=[False, True], ids=['plain', 'symmetric'])
def pot(request):
    return random_potential(level=12, n_psi=2, seed=5, symmetric=request.param)


@pytest.mark.parametrize('name', list(CELLS))
def test_forces(pot, name):
    cfg = CELLS[name]
    res = evaluate(pot, cfg)
    h = 1e-5
    fd = np.zeros_like(res.forces)
    for i in range(cfg.natoms):
        for k in range(3):
            plus, minus = cfg.copy(), cfg.copy()
            plus.positions[i, k] += h
            minus.positions[i, k] -= h
            fd[i, k] = -(energy(pot, plus, None) - energy(pot, minus, None)) / (2 * h)
    assert rel_err(fd, res.forces) <= TOL


@pytest.mark.parametrize('name', list(CELLS))
def test_stress(pot, name):
    cfg = CELLS[name]
    res = evaluate(pot, cfg)
    h = 1e-6
    fd = np.zeros(6)
    for v, (a, b) in enumerate([(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]):
        strain = np.zeros((3, 3))
        strain[a, b] += 0.5
        strain[b, a] += 0.5
        values = []
        for sign in (1, -1):
            deform = np.eye(3) + sign * h * strain
            c = cfg.copy()
            c.positions = cfg.positions @ deform
            c.cell = cfg.cell @ deform
            values.append(energy(pot, c, None))
        fd[v] = (values[0] - values[1]) / (2 * h) / cfg.volume
    assert rel_err(fd, res.stress) <= TOL
    assert np.allclose(res.stress, -res.virial / cfg.volume)


@pytest.mark.parametrize('name', list(CELLS))
def test_magnetic_forces(pot, name):
    cfg = CELLS[name]
    res = evaluate(pot, cfg)
    h = 1e-5
    fd = np.zeros(cfg.natoms)
    for i in range(cfg.natoms):
        plus, minus = cfg.copy(), cfg.copy()
        plus.moments[i] += h
        minus.moments[i] -= h
        fd[i] = -(energy(pot, plus, None) - energy(pot, minus, None)) / (2 * h)
    assert rel_err(fd, res.mag_forces) <= TOL
    moments_only = evaluate(pot, cfg, forces=False, gradient=True)  # what moment equilibration asks for
    assert moments_only.forces is None and moments_only.stress is None
    assert moments_only.energy == res.energy and np.array_equal(moments_only.mag_forces, res.mag_forces)
    assert np.array_equal(moments_only.grad, evaluate(pot, cfg, gradient=True).grad)


@pytest.mark.parametrize('name', ['triclinic8', 'primitive2'])
def test_parameter_gradient(pot, name):
    cfg = CELLS[name]
    res = evaluate(pot, cfg, gradient=True)
    theta = pot.get_params()
    h = 1e-6
    fd = np.zeros_like(theta)
    work = pot.copy()
    for k in range(theta.size):
        for sign in (1, -1):
            t = theta.copy()
            t[k] += sign * h
            work.set_params(t)
            fd[k] += sign * evaluate(work, cfg).energy
    fd /= 2 * h
    assert res.grad.shape == (pot.n_params,)
    assert rel_err(fd, res.grad) <= TOL
    # the energy is linear in species and moment coefficients: exactly E = grad . theta over those
    nr = pot.n_radial_params
    assert res.energy == pytest.approx(res.grad[nr:] @ theta[nr:] + _radial_only_energy(pot, cfg), rel=1e-12)


def _radial_only_energy(pot, cfg):
    """Energy with species and moment coefficients set to zero (must be 0: every term carries one)."""
    p = pot.copy()
    t = p.get_params()
    t[p.n_radial_params :] = 0.0
    p.set_params(t)
    return evaluate(p, cfg).energy


def test_nonmagnetic_forces_and_gradient():
    pot = random_potential(level=10, n_psi=1, seed=9)
    cfg = CELLS['triclinic8'].copy()
    cfg.moments = None
    res = evaluate(pot, cfg, gradient=True)
    assert np.all(res.mag_forces == 0)
    h = 1e-5
    i = 3
    fd = []
    for k in range(3):
        plus, minus = cfg.copy(), cfg.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        fd.append(-(evaluate(pot, plus).energy - evaluate(pot, minus).energy) / (2 * h))
    assert rel_err(np.array(fd), res.forces[i]) <= TOL
    assert pot.n_params == pot.radial_coeffs.size + 2 + pot.tables.n_alpha
