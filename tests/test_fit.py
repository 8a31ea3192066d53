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


def test_a_refit_reports_its_errors_on_earlier_labels_and_flags_a_conflict(tmp_path):
    """Fit quality (issue 11, item 5): ``mmtp train --earlier N`` measures the refit on the N labels fitted before.
    New labels consistent with them leave those errors where they were; labels that contradict them (the same cells,
    energies 0.3 eV/atom higher) raise them, and :func:`fit_drift` says so."""
    import json
    import subprocess
    import sys

    from aiida_mmtp.mtp.cfg_io import write_cfg
    from aiida_mmtp.mtp.mtp_io import write_mtp
    from aiida_mmtp.workchains.fit import fit_drift, rmse_summary

    ref = MagneticPairPotential()
    earlier = [ref.label(magnetic_crn(rocksalt(4.05 + 0.02 * k), seed=k)) for k in range(8)]
    consistent = [ref.label(magnetic_crn(rocksalt(4.06 + 0.02 * k), seed=20 + k)) for k in range(4)]
    conflicting = [cfg.copy() for cfg in earlier[:4]]
    for cfg in conflicting:
        cfg.energy += 0.3 * cfg.natoms
    write_mtp(Potential.from_level(4, ['Cr', 'N'], n_phi=3, n_psi=2, m_max=[3.2, 0.6], seed=1), tmp_path / 'p0.mtp')

    def train(start, configs, name, *extra):
        write_cfg(configs, tmp_path / f'{name}.cfg')
        args = [
            sys.executable,
            '-m',
            'aiida_mmtp.mtp.cli',
            'train',
            str(start),
            str(tmp_path / f'{name}.cfg'),
            str(tmp_path / f'{name}.mtp'),
            '--max-iter',
            '100',
            '--report',
            str(tmp_path / f'{name}.json'),
            *extra,
        ]
        done = subprocess.run(args, capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return rmse_summary(json.loads((tmp_path / f'{name}.json').read_text()))

    first = train(tmp_path / 'p0.mtp', earlier, 'first')
    assert first['rmse_E_meV_per_atom'] < 50 and 'earlier_rmse_E_meV_per_atom' not in first
    good = train(tmp_path / 'first.mtp', earlier + consistent, 'good', '--earlier', '8')
    bad = train(tmp_path / 'first.mtp', earlier + conflicting, 'bad', '--earlier', '8')
    assert set(good) >= {'earlier_rmse_E_meV_per_atom', 'new_rmse_E_meV_per_atom', 'fit_converged'}
    assert fit_drift(first, good) is None
    assert bad['earlier_rmse_E_meV_per_atom'] > 2 * first['rmse_E_meV_per_atom']
    note = fit_drift(first, bad)
    assert note is not None and note.startswith('the refit is worse on the labels fitted before: E ')
    refused = subprocess.run([sys.executable, '-m', 'aiida_mmtp.mtp.cli', 'train', str(tmp_path / 'p0.mtp'),
                              str(tmp_path / 'good.cfg'), str(tmp_path / 'x.mtp'), '--earlier', '12'],
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode == 2 and '--earlier 12: give a number between 1 and 11' in refused.stderr
    assert not (tmp_path / 'x.mtp').exists()
