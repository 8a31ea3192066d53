"""The loss gradient is exact; fitting lowers the loss and reports the paper's error table."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import crn_cells, magnetic_crn, random_potential

from aiida_mmtp.mtp.evaluate import evaluate
from aiida_mmtp.mtp.fit import errors, fit
from aiida_mmtp.mtp.loss import TrainingData, Weights, loss_and_gradient
from aiida_mmtp.mtp.potential import Potential
from aiida_mmtp.mtp.reference import MagneticPairPotential
from aiida_mmtp.mtp.structures import rocksalt


@pytest.mark.parametrize('symmetric', [False, True], ids=['plain', 'symmetric'])
def test_loss_gradient_finite_differences(symmetric):
    ref = random_potential(level=8, n_psi=2, seed=1, symmetric=symmetric)
    pot = random_potential(level=8, n_psi=2, seed=2, symmetric=symmetric)
    configs = [evaluate(ref, c).to_configuration(c) for c in crn_cells().values()]
    configs[1].virial = None  # missing labels simply do not contribute
    configs[2].mag_forces = None
    configs[0].energy = None
    data = TrainingData(configs, pot)
    weights = Weights(1.0, 0.03, 0.002, 0.2)
    loss, grad, terms = loss_and_gradient(pot, data, weights)
    assert loss == pytest.approx(terms.sum())
    theta = pot.get_params()
    work = pot.copy()
    h = 1e-6
    fd = np.zeros_like(theta)
    for k in range(theta.size):
        for sign in (1, -1):
            t = theta.copy()
            t[k] += sign * h
            work.set_params(t)
            fd[k] += sign * loss_and_gradient(work, data, weights)[0]
    fd /= 2 * h
    assert np.max(np.abs(fd - grad)) <= 1e-6 * np.max(np.abs(grad))


def _reference_set(n: int, seed: int):
    ref = MagneticPairPotential()
    return [ref.label(magnetic_crn(rocksalt(4.15), seed=seed + k, amplitude=0.08)) for k in range(n)]


def test_fit_lowers_loss_and_reports_errors():
    train = _reference_set(10, 0)
    pot = Potential.from_level(8, ['Cr', 'N'], n_phi=5, n_psi=2, m_max=[3.2, 0.5], seed=3)
    progress = []
    result = fit(pot, train, max_iter=150, progress=lambda *a: progress.append(a))
    assert result.history[-1] < 0.05 * result.history[0]
    assert len(progress) == result.iterations == len(result.history) - 1
    assert all(np.diff(result.history) <= 1e-12 * result.history[0])  # L-BFGS-B never goes up
    err = result.errors
    for key in ('energy_per_atom_meV', 'forces_meV_per_A', 'stress_GPa', 'mag_forces_meV_per_muB'):
        assert err[key]['rmse'] >= err[key]['mae'] > 0
    assert err['forces_meV_per_A']['n'] == 80 and err['stress_GPa']['n'] == 60
    # the report agrees with a recomputation, and a warm start continues from where it stopped
    assert errors(pot, TrainingData(train, pot)) == err
    again = fit(pot, train, max_iter=5)
    assert again.history[0] == pytest.approx(result.history[-1], rel=1e-9)


def test_fit_without_labels_is_refused():
    pot = Potential.from_level(6, ['Cr', 'N'], n_psi=2, m_max=[3.2, 0.5])
    with pytest.raises(ValueError, match='no labels'):
        fit(pot, [c.clear_labels() for c in crn_cells().values()])
