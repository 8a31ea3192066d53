"""The ``mmtp.abinit.cdft`` parser on real ABINIT 9.6.2 outputs (tests/data/abinit, see its README):
labels only from converged, on-target runs; every failure gets its exit code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / 'data' / 'abinit'
CELL = 4.15 / 2 * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])
FCC_SHIFTS = [[0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]]
PARAMETERS = {'ecut': 20, 'ratsph': {'Cr': 2.0, 'N': 1.5}, 'shiftk': FCC_SHIFTS}


@pytest.fixture
def parse_run(aiida_profile, aiida_localhost):
    """Parse the stored run ``name`` (its .abo as aiida.abo, its .log, if any, as aiida.log) as a CdftCalculation."""
    from aiida import orm
    from aiida.common.links import LinkType
    from aiida.plugins import ParserFactory

    from aiida_mmtp.calculations.cdft import moments_node

    def parse(name, moments=(2.0, 0.0), scheduler_status=None, structure=None, mesh=(2, 2, 2), **parameters):
        if structure is None:
            structure = orm.StructureData(cell=CELL)
            structure.append_atom(position=(0, 0, 0), symbols='Cr')
            structure.append_atom(position=tuple(CELL.sum(axis=0) / 2), symbols='N')
        kpoints = orm.KpointsData()
        kpoints.set_kpoints_mesh(list(mesh), [0.5, 0.5, 0.5] if mesh == (2, 2, 2) else [0, 0, 0])
        inputs = {'structure': structure, 'moments': moments_node(moments), 'kpoints': kpoints,
                  'parameters': orm.Dict({**PARAMETERS, **parameters})}  # fmt: skip
        node = orm.CalcJobNode(computer=aiida_localhost, process_type='aiida.calculations:mmtp.abinit.cdft')
        node.set_option('resources', {'num_machines': 1})
        for label, value in inputs.items():
            node.base.links.add_incoming(value.store(), link_type=LinkType.INPUT_CALC, link_label=label)
        if scheduler_status is not None:
            node.set_exit_status(scheduler_status)
        node.store()
        retrieved = orm.FolderData()
        for suffix, target in (('abo', 'aiida.abo'), ('log', 'aiida.log')):
            if (DATA / f'{name}.{suffix}').exists():
                retrieved.base.repository.put_object_from_file(str(DATA / f'{name}.{suffix}'), target)
        retrieved.base.links.add_incoming(node, link_type=LinkType.CREATE, link_label='retrieved')
        retrieved.store()
        results, call = ParserFactory('mmtp.abinit.cdft').parse_from_node(node, store_provenance=False)
        return results, call.exit_status, call.exit_message

    return parse


def test_converged_run_gives_labels_in_our_units(parse_run):
    results, status, _ = parse_run('converged')
    assert status == 0
    arrays, scalars = results['output_arrays'], results['output_parameters'].get_dict()
    text = (DATA / 'converged.abo').read_text()
    total = float(next(line for line in text.splitlines() if line.startswith('total_energy')).split()[-1])
    assert scalars['energy'] == pytest.approx(total * 27.21138386, rel=1e-12)
    assert scalars['abinit_version'] == '9.6.2' and scalars['scf_converged'] and not scalars['spin_flipped']
    assert arrays.get_array('forces').shape == (2, 3) and arrays.get_array('stress').shape == (6,)
    assert np.allclose(arrays.get_array('moments')[0], 2.0, atol=1e-5)
    # grspin (Ha/mu_B) = +dE/dm; T = -dE/dm in eV/mu_B; the free N atom has no torque
    assert arrays.get_array('mag_forces') == pytest.approx([-4.3629340062e-02 * 27.21138386, 0.0], rel=1e-9)
    assert scalars['max_moment_deviation'] < 1e-5


def test_unconverged_run_is_restartable_and_gives_no_labels(parse_run):
    results, status, message = parse_run('unconverged', nstep=6)
    assert status == 410 and 'did not converge in 6 steps' in message
    assert 'output_arrays' not in results and results['output_parameters']['scf_converged'] is False


def test_input_error_names_abinit_message(parse_run):
    results, status, message = parse_run('inputerror')
    assert status == 310 and 'chksymtnons' in message
    assert 'output_arrays' not in results
    _, status, message = parse_run('kgrid_error')  # the error only in the log
    assert status == 310 and 'symmetr' in message.lower()


def test_missing_and_truncated_output(parse_run, tmp_path):
    _, status, message = parse_run('no-such-run')
    assert status == 302 and 'aiida.abo' in message
    _, status, _ = parse_run('killed')  # killed by a signal mid-SCF: no "Calculation completed."
    assert status == 311
    _, status, _ = parse_run('killed', scheduler_status=120)  # the scheduler said: out of walltime
    assert status == 400


def test_timelimit_is_a_walltime_failure(parse_run):
    """abinit --timelimit (which the CalcJob passes from max_wallclock_seconds) stops the SCF and completes."""
    _, status, _ = parse_run('timelimit', ecut=30)
    assert status == 400


def test_moments_off_target_fail_with_site_named(parse_run):
    """tolvrs 1e-2: ABINIT calls the SCF converged but the Cr moment is 2.0185 for the target 2.0."""
    results, status, message = parse_run('offtarget', tolvrs=1e-2)
    assert status == 420 and 'site 1 (Cr) has 2.0185 mu_B for the target 2.0000' in message
    assert 'output_arrays' not in results
    _, status, _ = parse_run('offtarget', tolvrs=1e-2, moment_tolerance=0.05)
    assert status == 0


def test_output_of_other_targets_is_refused(parse_run):
    """The parser checks the echoed targets against the input: the negative run was made without the flip."""
    _, status, message = parse_run('negative', moments=(-2.0, 0.0))
    assert status == 313 and 'wrote [2.0, 0.0]' in message
    results, status, _ = parse_run('negative', moments=(-2.0, 0.0), spin_flip=False)
    assert status == 0 and results['output_parameters']['spin_flipped'] is False


def structure_of(name):
    """The cell and atoms written in ``name``.abi (rprim in A with acell 1, xred), as a StructureData."""
    from aiida import orm

    lines = (DATA / f'{name}.abi').read_text().splitlines()
    natom = int(next(line.split()[1] for line in lines if line.startswith('natom')))
    typat = [int(t) for t in next(line for line in lines if line.startswith('typat')).split()[1:]]
    rprim = np.array([[float(x) for x in lines[lines.index('rprim') + 1 + k].split()] for k in range(3)])
    xred = np.array([[float(x) for x in lines[lines.index('xred') + 1 + k].split()] for k in range(natom)])
    structure = orm.StructureData(cell=rprim)
    for frac, t in zip(xred, typat):
        structure.append_atom(position=tuple(frac @ rprim), symbols=('Cr', 'N')[t - 1])
    return structure


def test_all_zero_targets_are_not_a_mismatch(parse_run):
    """ABINIT leaves an all-zero spinat out of its echo: the run is on target, not of other targets."""
    structure = structure_of('zero_targets')
    params = {'ecut': 15, 'ratsph': {'Cr': 1.8, 'N': 1.2}, 'constrained': ['Cr', 'N'], 'nstep': 300,
              'magcon_lambda': 1.0, 'shiftk': None}  # fmt: skip
    results, status, message = parse_run('zero_targets', moments=[0.0] * 8, structure=structure, mesh=(1, 1, 1),
                                         **params)  # fmt: skip
    assert status == 0, message
    assert np.allclose(results['output_arrays'].get_array('moments'), 0.0, atol=1e-5)
    # the same output does not pass for targets it was not run with
    _, status, message = parse_run('zero_targets', moments=[1.0, 0.0] * 4, structure=structure, mesh=(1, 1, 1),
                                   **params)  # fmt: skip
    assert status == 313 and 'ABINIT echoes [0.0, 0.0' in message
