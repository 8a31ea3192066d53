"""Restart handlers of ``CdftBaseWorkChain`` called on a work chain instance with a finished child, in the
order they escalate (the real-ABINIT restarts are in test_cdft_workchains.py)."""

from __future__ import annotations

import numpy as np
import pytest

CELL = 4.15 / 2 * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])


@pytest.fixture
def workchain(aiida_profile, aiida_code_installed):
    from aiida import orm
    from aiida.engine.utils import instantiate_process
    from aiida.manage import get_manager

    from aiida_mmtp.calculations.cdft import moments_node
    from aiida_mmtp.data.pseudo import install_nc_family
    from aiida_mmtp.workchains.cdft_base import CdftBaseWorkChain

    def make(**options):
        structure = orm.StructureData(cell=CELL)
        structure.append_atom(position=(0, 0, 0), symbols='Cr')
        structure.append_atom(position=tuple(CELL.sum(axis=0) / 2), symbols='N')
        kpoints = orm.KpointsData()
        kpoints.set_kpoints_mesh([2, 2, 2])
        code = aiida_code_installed(default_calc_job_plugin='mmtp.abinit.cdft', filepath_executable='/bin/true')
        abinit = {'code': code, 'structure': structure, 'moments': moments_node([2.0, 0]),
                  'parameters': orm.Dict({'ecut': 20, 'ratsph': {'Cr': 2.0, 'N': 1.5}}),
                  'pseudos': install_nc_family().get_pseudos(elements=['Cr', 'N'])}  # fmt: skip
        if options:
            abinit['metadata'] = {'options': options}
        process = instantiate_process(get_manager().get_runner(), CdftBaseWorkChain, abinit=abinit, kpoints=kpoints)
        process.setup()
        return process

    return make


def failed_child(status):
    from aiida import orm
    from aiida.engine import ProcessState

    node = orm.CalcJobNode(computer=orm.load_computer('localhost'), process_type='aiida.calculations:mmtp.abinit.cdft')
    node.set_process_state(ProcessState.FINISHED)
    node.set_exit_status(status)
    return node.store()


def test_scf_handler_escalates_steps_then_mixing_then_gives_up(workchain):
    process = workchain()
    child = failed_child(410)
    steps = []
    for _ in range(4):
        report = process.handle_scf_not_converged(child)
        steps.append(
            (report.exit_code.status, process.ctx.parameters.get('nstep'), process.ctx.parameters.get('diemix'))
        )
    assert steps == [(0, 300, None), (0, 300, 0.3), (0, 300, 0.15), (410, 300, 0.15)]


def test_off_target_handler_tightens_scf_then_constraint(workchain):
    process = workchain()
    child = failed_child(420)
    tolvrs, lambdas, status = [], [], []
    for _ in range(8):
        report = process.handle_moments_off_target(child)
        tolvrs.append(process.ctx.parameters.get('tolvrs'))
        lambdas.append(process.ctx.parameters.get('magcon_lambda'))
        status.append(report.exit_code.status)
    assert tolvrs[:2] == pytest.approx([1e-12, 1e-14]) and tolvrs[-1] == pytest.approx(1e-14)
    assert lambdas[2:5] == pytest.approx([0.1, 1.0, 10.0])
    assert status[:5] == [0] * 5 and status[5] == 420


def test_walltime_handler_doubles_up_to_the_cap(workchain):
    process = workchain(max_wallclock_seconds=3600)
    report = process.handle_out_of_walltime(failed_child(400))
    assert report.exit_code.status == 0
    assert process.ctx.inputs['metadata']['options']['max_wallclock_seconds'] == 7200
    capped = workchain(max_wallclock_seconds=process.defaults.walltime_max)
    assert capped.handle_out_of_walltime(failed_child(400)).exit_code.status == 430


def test_merge_refuses_other_fidelity_unless_asked(aiida_profile):
    from aiida import orm

    from aiida_mmtp.calculations.functions import merge_training_sets
    from aiida_mmtp.data import TrainingSetData
    from aiida_mmtp.mtp.configuration import Configuration

    cfg = Configuration(positions=np.zeros((2, 3)) + [[0, 0, 0], [2.075, 2.075, 2.075]], types=np.array([0, 1]),
                        cell=CELL, moments=np.array([2.0, 0.0]), energy=-1.0)  # fmt: skip
    a = TrainingSetData([cfg], ['Cr', 'N'], fidelity={'ecut': 20, 'code': 'ABINIT 9.6.2'}, sources=['x'])
    b = TrainingSetData([cfg, cfg], ['Cr', 'N'], fidelity={'ecut': 30, 'code': 'ABINIT 9.6.2'})
    with pytest.raises(ValueError, match=r'different settings \(ecut\)'):
        merge_training_sets(a=a, b=b)
    merged = merge_training_sets(a=a, b=b, allow_different_fidelity=orm.Bool(True))
    assert len(merged) == 3 and merged.sources == ['x', '', ''] and 'mixed' in merged.fidelity
    same = merge_training_sets(a=a, b=a.clone())
    assert len(same) == 2 and same.fidelity == a.fidelity
    assert {link.node.pk for link in same.creator.base.links.get_incoming().all()} >= {a.pk}
