"""Engine steps as CalcJobs (``mmtp.train`` with the active set, ``mmtp.simulate``, ``mmtp.select``) and the
``mmtp.fit`` / ``mmtp.explore`` WorkChains, on configurations labelled by the analytic reference potential."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import reference_set

from aiida_mmtp.mtp.potential import Potential
from aiida_mmtp.mtp.structures import rocksalt


def start_configurations():
    from aiida_mmtp.data import TrainingSetData

    configs = []
    for state in ([2.4, 0, -2.4, 0, -2.4, 0, 2.4, 0], [2.4, 0] * 4):
        cfg = rocksalt(4.15)
        cfg.moments = np.array(state, dtype=float)
        configs.append(cfg)
    return TrainingSetData(configs, ['Cr', 'N'])


@pytest.fixture
def fitted(mmtp_code):
    """A level-6 potential fitted to 10 reference-labelled cells, with its active set (FitWorkChain)."""
    from aiida.engine import run_get_node

    from aiida_mmtp.data import MtpPotentialData
    from aiida_mmtp.workchains.fit import FitWorkChain

    start = MtpPotentialData(Potential.from_level(6, ['Cr', 'N'], n_phi=3, n_psi=2, m_max=[3.2, 0.6]))
    training_set = reference_set(10, spacing=0.01, amplitude=0.05)
    from aiida import orm

    results, node = run_get_node(FitWorkChain, train={'code': mmtp_code, 'potential': start,
                                                      'training_set': training_set,
                                                      'settings': orm.Dict({'max_iter': 40})})  # fmt: skip
    assert node.is_finished_ok, node.exit_message
    return results, training_set


def test_fit_gives_a_potential_and_its_active_set(fitted):
    results, training_set = fitted
    potential, active_set = results['potential'], results['active_set']
    assert active_set.base.attributes.get('n_params') == potential.n_params
    assert 1 <= active_set.base.attributes.get('n_from_training') <= len(training_set)  # K < m: unit rows fill A
    als = active_set.get_active_set()
    als.check(potential.get_potential())  # built for exactly these parameters
    train = potential.creator
    assert train.process_label == 'MmtpTrainCalculation' and train.inputs.training_set.pk == training_set.pk
    assert active_set.creator.pk == train.pk
    # maxvol converged over the training rows: none of them would grow |det A| (grade <= 1 + maxvol's tol)
    pot = potential.get_potential()
    assert max(als.grade(pot, cfg) for cfg in training_set.get_configurations()) <= 1 + 2e-3


def test_md_is_graded_and_maxvol_selects_from_what_it_preselected(fitted, mmtp_code):
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_mmtp.calculations.engine import MmtpSelectCalculation
    from aiida_mmtp.workchains.explore import ExploreWorkChain

    results, _ = fitted
    simulate = {'code': mmtp_code, 'potential': results['potential'], 'active_set': results['active_set'],
                'configurations': start_configurations(),
                'parameters': orm.Dict({'kind': 'md', 'temperature': 1500, 'steps': 15, 'timestep': 2.0,
                                        'gamma_low': 1.5, 'gamma_up': 1e6, 'seed': 3})}  # fmt: skip
    explored, node = run_get_node(ExploreWorkChain, simulate=simulate, max_jobs=orm.Int(2))
    assert node.is_finished_ok, node.exit_message
    report = explored['report'].get_dict()
    assert report['runs'] == 2 and len(report['jobs']) == 2  # one configuration per job
    preselected = explored['preselected']
    grades = preselected.get_array('grades')
    assert len(preselected) == report['preselected'] > 0
    assert np.all(grades >= 1.5) and grades.max() == pytest.approx(report['max_grade'])
    assert preselected.base.attributes.get('label_counts')['energy'] == 0  # no potential labels leak out
    cr = preselected.get_array('moments').reshape(-1, 8)[:, [0, 2, 4, 6]]
    afm, fm = np.array([1, -1, -1, 1]), np.ones(4)
    assert all(np.all(m * afm >= 0) or np.all(m * fm >= 0) for m in cr)  # MD keeps the signs it started with

    selected, sel = run_get_node(MmtpSelectCalculation, code=mmtp_code, potential=results['potential'],
                                 active_set=results['active_set'], candidates=preselected,
                                 parameters=orm.Dict({'max_selected': 3, 'updated_active_set': True}),
                                 metadata={'options': {'resources': {'num_machines': 1,
                                                                     'num_mpiprocs_per_machine': 2}}})  # fmt: skip
    assert sel.is_finished_ok, sel.exit_message
    # an engine job runs on the cores its resources give it: 2 here, 1 by default (the MD jobs above)
    assert sel.outputs.retrieved.get_object_content('select.log').splitlines()[0] == 'mmtp select: 2 threads'
    md_logs = [calc.outputs.retrieved.get_object_content('simulate.log') for calc in node.called_descendants
               if calc.process_label == 'MmtpSimulateCalculation']  # fmt: skip
    assert md_logs and all(log.splitlines()[0] == 'mmtp md: 1 threads' for log in md_logs)
    rep = selected['report'].get_dict()
    assert 1 <= rep['n_selected'] <= 3 and rep['n_candidates'] == len(preselected)
    picked = preselected.get_configurations()
    for k, cfg in zip(rep['selected'], selected['selected'].get_configurations()):
        assert np.allclose(cfg.positions, picked[k].positions)
    # the selected rows entered the active set: the same candidates now grade <= 1
    als, pot = selected['active_set'].get_active_set(), results['potential'].get_potential()
    assert all(als.grade(pot, picked[k]) <= 1 + 1e-6 for k in rep['selected'])

    # only what becomes no node stays in `retrieved`: the logs and the report (the rest was read and let go)
    def kept(job) -> list[str]:
        return sorted(n for n in job.outputs.retrieved.base.repository.list_object_names() if n[0] != '_')

    assert kept(sel) == ['select.json', 'select.log']  # no output.als, no selected.cfg
    assert kept(results['potential'].creator) == ['report.json', 'select.log', 'train.log']  # no .mtp, no .als
    # and the input nodes written out for the job are not stored again in its node (a fit's training set, a
    # simulation's active set: iterations x labels, and 2.9 MB per job at 606 parameters)
    for job in (sel, results['potential'].creator, *[n for n in node.called_descendants if n.process_label]):
        if hasattr(job, 'get_job_id'):
            assert not [n for n in job.base.repository.list_object_names() if n.endswith(('.als', '.cfg', '.mtp'))]


def test_bad_engine_inputs_are_refused_before_running(fitted, mmtp_code):
    from aiida import orm
    from aiida.engine import run

    from aiida_mmtp.calculations.engine import MmtpSelectCalculation, MmtpSimulateCalculation
    from aiida_mmtp.data import MtpPotentialData

    results, training_set = fitted
    common = {'code': mmtp_code, 'potential': results['potential'], 'active_set': results['active_set'],
              'configurations': start_configurations()}  # fmt: skip
    with pytest.raises(ValueError, match=r'gamma_low \(5\) must not exceed gamma_up \(2\)'):
        run(MmtpSimulateCalculation, **common, parameters=orm.Dict({'kind': 'md', 'gamma_low': 5, 'gamma_up': 2}))
    with pytest.raises(ValueError, match="`kind` must be one of equilibrate, relax, md, dlm-md, mdmc, got 'anneal'"):
        run(MmtpSimulateCalculation, **common, parameters=orm.Dict({'kind': 'anneal'}))
    with pytest.raises(ValueError, match="unknown parameter 'temperature' for relax"):
        run(MmtpSimulateCalculation, **common, parameters=orm.Dict({'kind': 'relax', 'temperature': 300}))
    with pytest.raises(ValueError, match="unknown parameter 'temprature' for md \\(did you mean temperature\\?\\)"):
        run(MmtpSimulateCalculation, **common, parameters=orm.Dict({'kind': 'md', 'temprature': 300}))
    with pytest.raises(ValueError, match='timestep must be > 0, got 0'):
        run(MmtpSimulateCalculation, **common, parameters=orm.Dict({'kind': 'md', 'timestep': 0}))
    other = MtpPotentialData(Potential.from_level(6, ['Fe', 'Al'], n_phi=3, n_psi=2, m_max=[3.0, 0.5]))
    with pytest.raises(ValueError, match=r"the potential is for \['Fe', 'Al'\], the training_set for \['Cr', 'N'\]"):
        run(MmtpSelectCalculation, code=mmtp_code, potential=other, training_set=training_set)
    with pytest.raises(ValueError, match='give either `training_set`'):
        run(MmtpSelectCalculation, code=mmtp_code, potential=results['potential'])


def test_an_iteration_whose_runs_failed_and_selected_nothing_is_not_converged(fitted, mmtp_code, codes):
    """Issue 12, finding 1: every run failed at its first step, nothing was preselected; this is not "converged"."""
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_mmtp.data import TrainingSetData
    from aiida_mmtp.workchains.campaign import CampaignWorkChain
    from aiida_mmtp.workchains.iteration import ActiveLearningIterationWorkChain

    results, training_set = fitted
    squeezed = []
    for moments in ([2.4, 0] * 4, [2.4, 0, -2.4, 0, -2.4, 0, 2.4, 0]):
        cfg = rocksalt(3.2)  # Cr-N 1.6 A: closer than the potential's min_dist (1.7 A), as an MD that collapsed
        cfg.moments = np.array(moments, dtype=float)
        squeezed.append(cfg)
    label = CampaignWorkChain.get_builder_from_protocol(*codes, protocol='fast').label._inputs(prune=True)
    _, node = run_get_node(ActiveLearningIterationWorkChain, code=mmtp_code, potential=results['potential'],
                           active_set=results['active_set'], training_set=training_set,
                           configurations=TrainingSetData(squeezed, ['Cr', 'N']), label=label,
                           simulation=orm.Dict({'kind': 'md', 'temperature': 300, 'steps': 20, 'timestep': 1.0,
                                                'gamma_low': 2.0, 'gamma_up': 10.0, 'seed': 1}))  # fmt: skip
    status = ActiveLearningIterationWorkChain.exit_codes.ERROR_RUNS_FAILED.status
    assert node.exit_status == status, node.exit_message
    assert '2 of 2 simulation runs failed' in node.exit_message and 'min_dist' in node.exit_message
    assert node.base.extras.get('failed_runs') == 2 and node.base.extras.get('selected') == 0
    assert 'potential' not in node.outputs  # nothing is handed on as if the stage had converged
    assert not [n for n in node.called_descendants if n.process_label == 'CdftCalculation']
