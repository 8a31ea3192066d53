"""``mmtp.train`` CalcJob: the engine's fit run as a job, with the potential linked to its training set."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import magnetic_crn, reference_set

from aiida_mmtp.mtp.potential import Potential
from aiida_mmtp.mtp.structures import rocksalt


def test_fit_runs_as_a_job_and_links_potential_to_training_set(mmtp_code):
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_mmtp.calculations.train import MmtpTrainCalculation
    from aiida_mmtp.data import MtpPotentialData

    start = MtpPotentialData(Potential.from_level(6, ['Cr', 'N'], n_psi=2, m_max=[3.2, 0.6]))
    training_set = reference_set(6)
    results, node = run_get_node(MmtpTrainCalculation, code=mmtp_code, potential=start, training_set=training_set,
                                 settings=orm.Dict({'max_iter': 30, 'weights': [1, 0.01, 0.001, 0.1]}))  # fmt: skip
    assert node.is_finished_ok, node.exit_message
    fitted, report = results['potential'], results['report'].get_dict()
    assert fitted.species == ['Cr', 'N'] and fitted.n_params == start.n_params
    assert not np.array_equal(fitted.get_potential().get_params(), start.get_potential().get_params())
    assert report['configurations'] == 6 and report['loss_final'] < report['loss_initial']
    assert report['weights'] == {'energy': 1, 'forces': 0.01, 'stress': 0.001, 'mag_forces': 0.1}
    assert fitted.creator.pk == node.pk and node.inputs.training_set.pk == training_set.pk


def test_bad_fit_inputs_are_refused_before_running(mmtp_code):
    from aiida.engine import run

    from aiida_mmtp.calculations.train import MmtpTrainCalculation
    from aiida_mmtp.data import MtpPotentialData, TrainingSetData

    other = MtpPotentialData(Potential.from_level(6, ['Fe', 'Al'], n_psi=2, m_max=[3.0, 0.5]))
    with pytest.raises(ValueError, match=r"the potential is for \['Fe', 'Al'\], the training set for \['Cr', 'N'\]"):
        run(MmtpTrainCalculation, code=mmtp_code, potential=other, training_set=reference_set(2))
    unlabelled = TrainingSetData([magnetic_crn(rocksalt(4.15), seed=1)], ['Cr', 'N'])
    start = MtpPotentialData(Potential.from_level(6, ['Cr', 'N'], n_psi=2, m_max=[3.2, 0.6]))
    with pytest.raises(ValueError, match='1 of 1 configurations have no energy label'):
        run(MmtpTrainCalculation, code=mmtp_code, potential=start, training_set=unlabelled)


def test_held_out_test_set_is_reported_and_never_fitted(mmtp_code):
    """The report's test_errors are the fitted potential's errors on the test labels, and the test set does not
    change the fit: the same potential comes out with and without it."""
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_mmtp.calculations.train import MmtpTrainCalculation
    from aiida_mmtp.data import MtpPotentialData
    from aiida_mmtp.mtp.fit import errors
    from aiida_mmtp.mtp.loss import TrainingData
    from aiida_mmtp.workchains.fit import rmse_summary

    start = MtpPotentialData(Potential.from_level(6, ['Cr', 'N'], n_psi=2, m_max=[3.2, 0.6]))
    training_set, test_set = reference_set(6), reference_set(3, spacing=0.05, amplitude=0.1)
    settings = orm.Dict({'max_iter': 20})
    with_test, node = run_get_node(MmtpTrainCalculation, code=mmtp_code, potential=start, training_set=training_set,
                                   test_set=test_set, settings=settings)  # fmt: skip
    assert node.is_finished_ok, node.exit_message
    without, _ = run_get_node(MmtpTrainCalculation, code=mmtp_code, potential=start, training_set=training_set,
                              settings=settings)  # fmt: skip
    fitted = with_test['potential'].get_potential()
    assert np.array_equal(fitted.get_params(), without['potential'].get_potential().get_params())
    report = with_test['report'].get_dict()
    expected = errors(fitted, TrainingData(test_set.get_configurations(), fitted))
    assert report['test_errors']['configurations'] == 3
    for key in ('energy_per_atom_meV', 'forces_meV_per_A', 'stress_GPa', 'mag_forces_meV_per_muB'):
        assert report['test_errors'][key]['rmse'] == pytest.approx(expected[key]['rmse'], rel=1e-9)
    summary = rmse_summary(report)
    assert summary['test_rmse_E_meV_per_atom'] == pytest.approx(expected['energy_per_atom_meV']['rmse'])
    assert summary['rmse_E_meV_per_atom'] == report['errors']['energy_per_atom_meV']['rmse']
