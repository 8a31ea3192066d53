"""``mmtp.properties`` jobs and the ``PropertiesWorkChain`` on a potential fitted in the suite: results, tables
and plots downstream of the potential, the CLI, and bad input refused before anything runs."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from conftest import fitted_reference_potential

from aiida_mmtp.mtp.potential import Potential

#: small settings: 8-atom cells everywhere, 4 random states, coarse meshes, five volumes
SMALL = {
    'settings': {
        'state': {'n_states': 4},
        'average': {'supercell': [1, 1, 1]},
        'elastic': {'supercell': [1, 1, 1], 'method': 'stress'},
        'phonons': {'supercell': [1, 1, 1], 'mesh': [4, 4, 4], 'band_points': 5},
        'qha': {'supercell': [1, 1, 1], 'mesh': [4, 4, 4], 'scales': [0.98, 0.99, 1.0, 1.01, 1.02], 't_max': 600,
                't_step': 20},
    },
    'states': ['FM', 'PM'],
}  # fmt: skip


@pytest.fixture
def potential_node(aiida_profile):
    from aiida_mmtp.data import MtpPotentialData

    return MtpPotentialData(fitted_reference_potential()).store()


def _processes() -> int:
    from aiida import orm

    return orm.QueryBuilder().append(orm.ProcessNode).count()


def test_property_set_with_provenance_and_cli(mmtp_code, potential_node, tmp_path):
    from aiida import get_profile, orm
    from aiida.engine import run_get_node
    from click.testing import CliRunner

    from aiida_mmtp.cli import main
    from aiida_mmtp.workchains.properties import PropertiesWorkChain

    builder = PropertiesWorkChain.get_builder_from_protocol(mmtp_code, potential_node, protocol='fast', overrides=SMALL)
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    expected = {'FM_average', 'FM_elastic', 'FM_phonons', 'PM_average', 'PM_elastic', 'PM_phonons', 'PM_qha'}
    assert set(results['results']) == expected
    # every result and plot sits downstream of the potential: made by a job whose input is the potential
    for label, res in results['results'].items():
        job = res.creator
        assert job.process_label == 'MmtpPropertiesCalculation' and job.inputs.potential.pk == potential_node.pk
        assert job.inputs.parameters['kind'] == label.split('_', 1)[1]
    assert {'FM_phonons_phonons', 'PM_phonons_phonons', 'PM_qha_qha', 'PM_average_convergence'} <= set(results['plots'])
    for png in results['plots'].values():
        assert png.get_content('rb')[:8] == b'\x89PNG\r\n\x1a\n'
    descendants = orm.QueryBuilder().append(orm.Node, filters={'id': potential_node.pk}, tag='pot')
    descendants.append(orm.SinglefileData, with_ancestors='pot', filters={'id': results['table_ii'].pk})
    assert descendants.distinct().count() == 1  # Table II is a descendant of the potential
    assert node.uuid in orm.load_node(potential_node.pk).base.extras.get('properties')

    fm = results['results']['FM_elastic'].get_dict()
    c = np.array(fm['elastic']['stress_strain']['C_raw'])
    assert c[0, 0] == pytest.approx(c[2, 2], rel=1e-8) and c[0, 1] == pytest.approx(c[1, 2], rel=1e-8)
    assert fm['crystal_system'] == 'cubic' and fm['lattice_A'][0] == pytest.approx(fm['lattice_A'][2], rel=1e-9)
    for state in ('FM', 'PM'):
        gamma = results['results'][f'{state}_phonons']['gamma_frequencies_THz']
        assert np.all(np.abs(gamma[:3]) < 1e-3)
    pm_average = results['results']['PM_average'].get_dict()
    assert pm_average['n_states'] == 4 and pm_average['force_on_displaced_sem_eV_per_A'][0] is not None
    qha = results['results']['PM_qha'].get_dict()
    assert len(qha['volumes_A3']) == 5 and qha['t_max_K'] == pytest.approx(600)
    rows = list(csv.reader(io.StringIO(results['table_ii'].get_content())))
    assert rows[0][:3] == ['state', 'method', 'C11']
    assert ['FM', 'paper: mMTP', '594.0'] == rows[2][:3] and rows[1][:2] == ['FM', 'this potential']
    summary = results['summary'].get_dict()
    assert summary['FM']['elastic']['born_stable'] in (True, False) and 'qha' in summary['PM']

    profile = ['-p', get_profile().name]
    runner = CliRunner()
    shown = runner.invoke(main, ['properties', 'show', str(node.pk), *profile])
    assert shown.exit_code == 0, shown.output
    assert 'Table II (GPa)' in shown.output and 'paper: mMTP' in shown.output and 'PM:' in shown.output
    out = tmp_path / 'export'
    done = runner.invoke(main, ['properties', 'export', str(node.pk), '-o', str(out), *profile])
    assert done.exit_code == 0, done.output
    for name in ('summary.json', 'table_ii.csv', 'FM_elastic.json', 'FM_elastic_table_ii.csv', 'PM_qha_qha.csv',
                 'PM_phonons_phonons.png', 'PM_average_convergence.png'):  # fmt: skip
        assert (out / name).stat().st_size > 0, name


def test_bad_property_inputs_are_refused_before_anything_runs(mmtp_code, potential_node, aiida_profile):
    from aiida import orm
    from aiida.engine import run

    from aiida_mmtp.data import MtpPotentialData
    from aiida_mmtp.workchains.properties import PropertiesWorkChain

    before = _processes()

    def builder(potential=potential_node, **overrides):
        return PropertiesWorkChain.get_builder_from_protocol(mmtp_code, potential, protocol='fast',
                                                             overrides=overrides)  # fmt: skip

    fe = orm.StructureData(cell=[[2.87, 0, 0], [0, 2.87, 0], [0, 0, 2.87]])
    fe.append_atom(position=(0, 0, 0), symbols='Fe')
    fe.append_atom(position=(1.435, 1.435, 1.435), symbols='Al')
    b = builder()
    b.structure = fe
    with pytest.raises(ValueError, match=r'the structure has Al, Fe, but the potential is for Cr, N'):
        run(b)
    plain = MtpPotentialData(Potential.from_level(4, ['Cr', 'N'], n_phi=3))
    with pytest.raises(ValueError, match='PM average: the potential is not magnetic: it has no PM state'):
        run(builder(potential=plain, properties=['average'], states=['FM', 'PM']))
    with pytest.raises(ValueError, match='PM qha: qha needs at least 5 different volumes'):
        run(builder(settings={'qha': {'scales': [0.99, 1.0, 1.01, 1.01]}}))
    with pytest.raises(ValueError, match=r'states: unknown Neel'):
        run(builder(states=['FM', 'Neel']))
    with pytest.raises(ValueError, match='FM elastic: elastic: unknown settings strain'):
        run(builder(settings={'elastic': {'strain': 0.01}}))
    assert _processes() == before  # nothing ran


def test_a_failed_job_is_reported_and_the_others_kept(mmtp_code, potential_node):
    """The fitted potential never saw tetragonal strains: relaxing its AFM state stretches c until atoms collapse.
    That job fails with the engine's message; the FM job's results are still output, with the summary."""
    from aiida.engine import run_get_node

    from aiida_mmtp.workchains.properties import PropertiesWorkChain

    overrides = {'states': ['FM', 'AFM'], 'properties': ['elastic'],
                 'settings': {'elastic': {'method': 'stress', 'magnitudes': [0.01]}}}  # fmt: skip
    builder = PropertiesWorkChain.get_builder_from_protocol(mmtp_code, potential_node, overrides=overrides)
    results, node = run_get_node(builder)
    assert node.exit_status == PropertiesWorkChain.exit_codes.ERROR_JOB_FAILED.status
    assert 'MmtpPropertiesCalculation' in node.exit_message and 'relaxation (full) failed' in node.exit_message
    failed = [job for job in node.called if not job.is_finished_ok]
    assert [job.label for job in failed] == ['AFM elastic'] and failed[0].exit_status == 310
    assert set(results['results']) == {'FM_elastic'}
    assert 'AFM' not in results['summary'].get_dict() and results['table_ii'].get_content().count('FM') == 4


def test_the_command_line_offers_the_engine_states_and_properties():
    from aiida_mmtp.cli import properties as cli
    from aiida_mmtp.mtp.properties.run import KINDS
    from aiida_mmtp.mtp.properties.states import STATE_KINDS

    assert cli._STATES == STATE_KINDS and cli._KINDS == KINDS
    from aiida_mmtp.mtp.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert tuple(commands['properties']._actions[1].choices) == KINDS


def test_one_state_section_serves_every_state_the_pm_sampling_only_pm():
    """``settings.state: {sampling: dlm-md}`` reaches the PM job; FM and AFM jobs, one state each, do not get it
    (the engine refuses a sampled ordered state)."""
    from aiida_mmtp.mtp.properties.run import parse_state
    from aiida_mmtp.mtp.reference import MagneticPairPotential
    from aiida_mmtp.workchains.properties import job_parameters

    settings = {'state': {'n_states': 12, 'sampling': 'dlm-md', 'temperature': 800}, 'elastic': {'method': 'stress'}}
    for state in ('FM', 'AFM', 'PM'):
        params = job_parameters(settings, state, 'elastic')
        spec = parse_state(MagneticPairPotential(), params['settings'])
        assert spec.kind == state and params['settings']['method'] == 'stress'
        assert (spec.sampling, spec.temperature) == (('dlm-md', 800.0) if state == 'PM' else ('random', 1000.0))
