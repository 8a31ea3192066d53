"""The cDFT CalcJob and WorkChains with the real ``abinit`` on test-sized CrN cells (2 and 8 atoms):
spin-flip and mirror symmetry, restarts that fix real failures, batch labelling with failures recorded,
and bad input refused before anything runs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

A = 4.15
PRIM = A / 2 * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])
FCC_SHIFTS = [[0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]]
PARAMETERS = {'ecut': 20, 'ratsph': {'Cr': 2.0, 'N': 1.5}, 'shiftk': FCC_SHIFTS}


@pytest.fixture
def abinit_code(aiida_code_installed):
    exe = shutil.which('abinit')
    if exe is None:
        pytest.fail('ABINIT is not installed: scripts/bootstrap.sh installs it (apt-get install abinit abinit-data)')
    return aiida_code_installed(label='abinit', default_calc_job_plugin='mmtp.abinit.cdft', filepath_executable=exe,
                                prepend_text='export OMP_NUM_THREADS=1')  # fmt: skip


@pytest.fixture
def pseudos(aiida_profile):
    from aiida_mmtp.data.pseudo import install_nc_family

    return install_nc_family().get_pseudos(elements=['Cr', 'N'])


def primitive(n_pos=(0.5, 0.5, 0.5)):
    from aiida import orm

    structure = orm.StructureData(cell=PRIM)
    structure.append_atom(position=(0, 0, 0), symbols='Cr')
    structure.append_atom(position=tuple(np.array(n_pos) @ PRIM), symbols='N')
    return structure


def cubic8():
    """The 8-atom cubic B1 cell, Cr and N alternating; Cr 1, 2 at z = 0, Cr 3, 4 at z = a/2 (AFM1 layers)."""
    from aiida import orm

    structure = orm.StructureData(cell=A * np.eye(3))
    for frac in ((0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)):
        structure.append_atom(position=tuple(A * np.array(frac)), symbols='Cr')
    for frac in ((0.5, 0, 0), (0, 0.5, 0), (0, 0, 0.5), (0.5, 0.5, 0.5)):
        structure.append_atom(position=tuple(A * np.array(frac)), symbols='N')
    return structure


def mesh(n, offset=(0, 0, 0)):
    from aiida import orm

    kpoints = orm.KpointsData()
    kpoints.set_kpoints_mesh([n] * 3, offset)
    return kpoints


def cdft_inputs(code, pseudos, structure, moments, kpoints, **parameters):
    from aiida import orm

    from aiida_mmtp.calculations.cdft import moments_node

    return {'code': code, 'structure': structure, 'moments': moments_node(moments), 'kpoints': kpoints,
            'pseudos': pseudos, 'parameters': orm.Dict({**PARAMETERS, **parameters})}  # fmt: skip


def test_spin_flip_gives_the_mirror_image(abinit_code, pseudos):
    """A mostly negative state runs flipped and comes back as the exact mirror of the positive one."""
    from aiida.engine import run_get_node

    from aiida_mmtp.calculations.cdft import CdftCalculation

    up, node_up = run_get_node(CdftCalculation, **cdft_inputs(abinit_code, pseudos, primitive(), [2.0, 0], mesh(2)))
    down, node_down = run_get_node(
        CdftCalculation, **cdft_inputs(abinit_code, pseudos, primitive(), [-2.0, 0], mesh(2))
    )
    assert node_up.is_finished_ok and node_down.is_finished_ok, (node_up.exit_message, node_down.exit_message)
    assert down['output_parameters']['spin_flipped'] and not up['output_parameters']['spin_flipped']
    written = node_down.base.repository.get_object_content('aiida.abi')
    lines = written.splitlines()
    spinat = lines.index('spinat')
    assert [float(x) for x in lines[spinat + 1].split()] == [0, 0, 2.0]  # ran flipped
    assert down['output_parameters']['energy'] == pytest.approx(up['output_parameters']['energy'], abs=1e-8)
    a, b = up['output_arrays'], down['output_arrays']
    assert np.allclose(b.get_array('forces'), a.get_array('forces'), atol=1e-8)
    assert np.allclose(b.get_array('moments'), -a.get_array('moments'), atol=1e-8)
    assert np.allclose(b.get_array('mag_forces'), -a.get_array('mag_forces'), atol=1e-8)
    assert b.get_array('moments')[0] == pytest.approx(-2.0, abs=1e-4)


def test_without_the_flip_a_negative_state_is_trapped(abinit_code, pseudos):
    """The remedy matters: run unflipped, the same state converges ~2 eV higher (shared/docs/cdft.md)."""
    from aiida.engine import run_get_node

    from aiida_mmtp.calculations.cdft import CdftCalculation

    flipped, _ = run_get_node(CdftCalculation, **cdft_inputs(abinit_code, pseudos, primitive(), [-2.0, 0], mesh(2)))
    trapped, node = run_get_node(
        CdftCalculation, **cdft_inputs(abinit_code, pseudos, primitive(), [-2.0, 0], mesh(2), spin_flip=False)
    )
    assert node.is_finished_ok and not trapped['output_parameters']['spin_flipped']
    assert trapped['output_parameters']['energy'] > flipped['output_parameters']['energy'] + 1.0


def test_afm_and_its_mirror_image_in_the_8_atom_cell(abinit_code, pseudos):
    """Two genuinely different runs (targets summing to zero are never flipped): same E and forces, opposite T.

    Test size: ecut 15 Ha, Gamma only (9 s a run); the layered AFM1 order of the paper's CrN.
    """
    from aiida.engine import run_get_node

    from aiida_mmtp.calculations.cdft import CdftCalculation

    targets = np.array([1.8, 1.8, -1.8, -1.8, 0, 0, 0, 0])
    runs = [
        run_get_node(
            CdftCalculation,
            **cdft_inputs(abinit_code, pseudos, cubic8(), sign * targets, mesh(1), shiftk=None, ecut=15),
        )  # fmt: skip
        for sign in (1, -1)
    ]
    (a, node_a), (b, node_b) = runs
    assert node_a.is_finished_ok and node_b.is_finished_ok, (node_a.exit_message, node_b.exit_message)
    assert not a['output_parameters']['spin_flipped'] and not b['output_parameters']['spin_flipped']
    assert b['output_parameters']['energy'] == pytest.approx(a['output_parameters']['energy'], abs=1e-5)
    fa, fb = a['output_arrays'], b['output_arrays']
    assert np.allclose(fa.get_array('moments')[:4], targets[:4], atol=1e-3)
    assert np.allclose(fb.get_array('moments'), -fa.get_array('moments'), atol=1e-4)
    assert np.allclose(fb.get_array('forces'), fa.get_array('forces'), atol=1e-4)
    assert np.allclose(fb.get_array('mag_forces'), -fa.get_array('mag_forces'), rtol=1e-4, atol=1e-4)
    assert np.abs(fa.get_array('mag_forces')[:4]).min() > 0.1  # 1.8 mu_B is not the equilibrium moment


def base_inputs(code, pseudos, structure, moments, **parameters):
    inputs = cdft_inputs(code, pseudos, structure, moments, mesh(2), **parameters)
    return {'abinit': {k: v for k, v in inputs.items() if k != 'kpoints'}, 'kpoints': inputs['kpoints']}


def test_unconverged_run_is_restarted_with_more_steps_and_finishes(abinit_code, pseudos):
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_mmtp.workchains.cdft_base import CdftBaseWorkChain

    results, node = run_get_node(
        CdftBaseWorkChain, **base_inputs(abinit_code, pseudos, primitive(), [2.0, 0], nstep=25)
    )
    first, last = sorted(node.called, key=lambda n: n.ctime)
    assert first.exit_status == 410
    assert first.inputs.parameters['nstep'] == 25 and last.inputs.parameters['nstep'] == 50
    assert node.is_finished_ok and last.is_finished_ok
    assert results['output_parameters']['scf_converged'] and 25 < results['output_parameters']['scf_steps'] <= 50
    reports = [log.message for log in orm.Log.collection.get_logs_for(node)]
    assert any('SCF not converged in 25 steps; restarting with 50' in message for message in reports)


def test_off_target_run_is_restarted_with_a_tighter_scf(abinit_code, pseudos):
    from aiida.engine import run_get_node

    from aiida_mmtp.workchains.cdft_base import CdftBaseWorkChain

    inputs = base_inputs(abinit_code, pseudos, primitive(), [2.0, 0], tolvrs=1e-2, moment_tolerance=5e-3)
    results, node = run_get_node(CdftBaseWorkChain, **inputs)
    first, last = sorted(node.called, key=lambda n: n.ctime)
    assert first.exit_status == 420 and last.inputs.parameters['tolvrs'] == pytest.approx(1e-4)
    assert node.is_finished_ok and results['output_parameters']['max_moment_deviation'] < 5e-3


def test_walltime_is_doubled_until_the_run_fits(abinit_code, pseudos):
    """ABINIT's --timelimit (90% of max_wallclock_seconds) stops the SCF; the handler doubles the walltime."""
    from aiida.engine import run_get_node

    from aiida_mmtp.workchains.cdft_base import CdftBaseWorkChain

    inputs = base_inputs(abinit_code, pseudos, primitive(), [2.0, 0], ecut=30)
    inputs['abinit']['metadata'] = {'options': {'max_wallclock_seconds': 2}}
    inputs['max_iterations'] = 6
    _, node = run_get_node(CdftBaseWorkChain, **inputs)
    children = sorted(node.called, key=lambda n: n.ctime)
    assert children[0].exit_status == 400 and children[0].get_option('max_wallclock_seconds') == 2
    assert node.is_finished_ok, node.exit_message
    walltimes = [c.get_option('max_wallclock_seconds') for c in children]
    assert walltimes == [2 * 2**k for k in range(len(children))]


def test_abinit_input_error_is_not_restarted(abinit_code, pseudos):
    from aiida.engine import run_get_node

    from aiida_mmtp.workchains.cdft_base import CdftBaseWorkChain

    _, node = run_get_node(CdftBaseWorkChain, **base_inputs(abinit_code, pseudos, primitive(), [2.0, 0],
                                                            extra={'ixc': 999}))  # fmt: skip
    assert len(node.called) == 1 and node.called[0].exit_status == 310
    assert node.exit_status == 300 and 'ixc' in node.exit_message


def rattled(seed):
    from aiida import orm

    rng = np.random.default_rng(seed)
    structure = orm.StructureData(cell=PRIM)
    structure.append_atom(position=(0, 0, 0), symbols='Cr')
    structure.append_atom(position=tuple(np.array([0.5, 0.5, 0.5]) @ PRIM + rng.normal(0, 0.05, 3)), symbols='N')
    return structure


def configurations(structures, moments):
    from aiida_mmtp.data import TrainingSetData
    from aiida_mmtp.mtp.configuration import Configuration

    configs = [Configuration(positions=np.array([s.position for s in st.sites]), types=np.array([0, 1]),
                             cell=np.array(st.cell), moments=np.array(m, dtype=float))
               for st, m in zip(structures, moments)]  # fmt: skip
    return TrainingSetData(configs, ['Cr', 'N'])


def test_labelling_records_failures_and_links_every_label_to_its_run(abinit_code, pseudos, mmtp_code):
    """One k-shift: fine for the two displaced cells, a real ABINIT error (k-grid not symmetric) for the ideal one."""
    from aiida import orm
    from aiida.engine import run_get_node
    from aiida.manage.caching import enable_caching

    from aiida_mmtp.workchains.label import CdftLabelWorkChain

    batch = configurations([primitive(), rattled(1), rattled(2)], [[2.0, 0], [1.5, 0], [-2.2, 0]])
    inputs = {'configurations': batch, 'max_concurrent': orm.Int(2), 'max_failure_fraction': orm.Float(0.4),
              'cdft': base_inputs(abinit_code, pseudos, primitive(), [0, 0], shiftk=[[0.5, 0.5, 0.5]])}  # fmt: skip
    for key in ('structure', 'moments'):
        inputs['cdft']['abinit'].pop(key)
    with enable_caching(identifier='aiida.calculations:mmtp.abinit.cdft'):
        results, node = run_get_node(CdftLabelWorkChain, **inputs)
        assert node.is_finished_ok, node.exit_message
        failures = results['failures'].get_dict()
        assert failures['n_failed'] == 1 and failures['failed'][0]['index'] == 0
        assert (
            failures['failed'][0]['exit_status'] == 300
            and 'k point grid is not symmetric' in failures['failed'][0]['message']
        )
        labelled = results['training_set']
        assert len(labelled) == 2 and labelled.base.attributes.get('label_counts')['mag_forces'] == 2
        configs = labelled.get_configurations()
        assert configs[1].moments[0] == pytest.approx(-2.2, abs=1e-3) and configs[1].mag_forces[1] == 0.0
        fidelity = labelled.fidelity
        assert fidelity['code'] == 'ABINIT 9.6.2' and fidelity['ecut'] == 20
        assert fidelity['pseudos'] == {'Cr': pseudos['Cr'].md5, 'N': pseudos['N'].md5}
        # provenance: each label's source is the CdftCalculation whose output went into the set
        creator = labelled.creator
        linked = {link.node.creator.uuid for link in creator.base.links.get_incoming().all()
                  if link.link_label.startswith('arrays_')}  # fmt: skip
        assert set(labelled.sources) == linked and len(linked) == 2
        for uuid in labelled.sources:
            assert orm.load_node(uuid).process_type == 'aiida.calculations:mmtp.abinit.cdft'
        # a stricter tolerance: the same labels (cached runs), but the batch counts as failed
        inputs['max_failure_fraction'] = orm.Float(0.2)
        results, node = run_get_node(CdftLabelWorkChain, **inputs)
        assert node.exit_status == 400 and '1 of 3 runs failed' in node.exit_message
        assert len(results['training_set']) == 2
        # issue 12, finding 3: such a batch in an iteration stops it (405), before anything is trained on it; the
        # campaign maps 405 to its own 350 (ERROR_TOO_MANY_FAILURES) instead of going on
        iteration = over_budget_iteration(mmtp_code, batch, {**inputs, 'configurations': None})
        assert iteration.exit_status == 405 and '1 of 3 runs failed' in iteration.exit_message, iteration.exit_message
        assert 'potential' not in iteration.outputs
        assert not [n for n in iteration.called_descendants if n.process_label == 'MmtpTrainCalculation']


def over_budget_iteration(mmtp_code, batch, label):
    """An ActiveLearningIterationWorkChain that labels ``batch`` directly (a `label` stage) with ``label`` inputs."""
    from aiida import orm
    from aiida.engine import run_get_node
    from conftest import reference_set

    from aiida_mmtp.data import MtpPotentialData
    from aiida_mmtp.data.active_set import ActiveSetData
    from aiida_mmtp.mtp.potential import Potential
    from aiida_mmtp.mtp.selection import ActiveSet
    from aiida_mmtp.workchains.iteration import ActiveLearningIterationWorkChain

    pot = Potential.from_level(4, ['Cr', 'N'], n_phi=3, n_psi=2, m_max=[3.2, 0.6], seed=1)
    training_set = reference_set(4)
    active_set = ActiveSet.build(pot, training_set.get_configurations())
    label = {key: value for key, value in label.items() if value is not None}
    _, node = run_get_node(ActiveLearningIterationWorkChain, code=mmtp_code, potential=MtpPotentialData(pot),
                           active_set=ActiveSetData(active_set), training_set=training_set, configurations=batch,
                           simulation=orm.Dict({'kind': 'label'}), label=label)  # fmt: skip
    return node


def test_bad_input_fails_before_anything_runs(abinit_code, pseudos):
    from aiida import orm
    from aiida.engine import run

    from aiida_mmtp.calculations.cdft import CdftCalculation
    from aiida_mmtp.workchains.cdft_base import CdftBaseWorkChain
    from aiida_mmtp.workchains.label import CdftLabelWorkChain

    n_before = orm.QueryBuilder().append(orm.ProcessNode).count()
    with pytest.raises(ValueError, match='moment 3 is on an unknown site: the structure has 2 sites'):
        run(CdftCalculation, **cdft_inputs(abinit_code, pseudos, primitive(), [2.0, 0, 1.0], mesh(2)))
    with pytest.raises(ValueError, match=r'atomic spheres overlap: atom 1 \(Cr, ratsph 2.6 bohr\) and atom 2 \(N'):
        run(CdftCalculation, **cdft_inputs(abinit_code, pseudos, primitive(), [2.0, 0], mesh(2),
                                           ratsph={'Cr': 2.6, 'N': 1.5}))  # fmt: skip
    with pytest.raises(ValueError, match='no pseudopotential for N'):
        run(CdftCalculation, **cdft_inputs(abinit_code, {'Cr': pseudos['Cr']}, primitive(), [2.0, 0], mesh(2)))
    with pytest.raises(ValueError, match='the pseudopotential given for N is for Cr'):
        run(CdftCalculation, **cdft_inputs(abinit_code, {'Cr': pseudos['Cr'], 'N': pseudos['Cr']}, primitive(),
                                           [2.0, 0], mesh(2)))  # fmt: skip
    with pytest.raises(ValueError, match='unknown parameters: ecutt'):
        run(CdftCalculation, **cdft_inputs(abinit_code, pseudos, primitive(), [2.0, 0], mesh(2), ecutt=30))
    with pytest.raises(ValueError, match='exceeds max_moment'):
        run(CdftCalculation, **cdft_inputs(abinit_code, pseudos, primitive(), [6.0, 0], mesh(2)))
    with pytest.raises(ValueError, match='`extra` may not set spinat'):
        run(CdftCalculation, **cdft_inputs(abinit_code, pseudos, primitive(), [2.0, 0], mesh(2),
                                           extra={'spinat': '0 0 1'}))  # fmt: skip
    inputs = base_inputs(abinit_code, pseudos, primitive(), [2.0, 0])
    with pytest.raises(ValueError, match='either `kpoints`'):
        run(CdftBaseWorkChain, kpoints_distance=orm.Float(0.3), **inputs)
    inputs['abinit']['moments'] = inputs['abinit']['moments'].clone()
    inputs['abinit']['moments'].set_array('moments', np.array([2.0]))
    with pytest.raises(ValueError, match='1 moments were given for 2 sites'):
        run(CdftBaseWorkChain, **inputs)
    batch = configurations([rattled(1), primitive()], [[2.0, 0], [2.0, 0]])
    label_inputs = base_inputs(abinit_code, pseudos, primitive(), [0, 0], ratsph={'Cr': 2.0, 'N': 2.3})
    for key in ('structure', 'moments'):
        label_inputs['abinit'].pop(key)
    with pytest.raises(ValueError, match=r'configuration 1: atomic spheres overlap'):
        run(CdftLabelWorkChain, configurations=batch, cdft=label_inputs)
    assert orm.QueryBuilder().append(orm.ProcessNode).count() == n_before  # nothing ran, nothing was recorded


def test_dft_plus_u_with_the_paw_family(abinit_code):
    """gpaw-data LDA PAW setups with U = 3 eV on Cr d: U favours a larger moment, so T(m = 2) rises."""
    from aiida.engine import run_get_node

    from aiida_mmtp.calculations.cdft import CdftCalculation
    from aiida_mmtp.data.pseudo import install_paw_family

    paw = install_paw_family().get_pseudos(elements=['Cr', 'N'])
    settings = {'ecut': 12, 'pawecutdg': 24, 'ratsph': {'Cr': 2.3, 'N': 1.5}}  # PAW needs ratsph >= r_PAW (2.3)
    with pytest.raises(ValueError, match=r'ratsph for Cr \(2.0 bohr\) is smaller than the PAW radius .* \(2.3 bohr\)'):
        run_get_node(CdftCalculation, **cdft_inputs(abinit_code, paw, primitive(), [2.0, 0], mesh(2),
                                                    **{**settings, 'ratsph': {'Cr': 2.0, 'N': 1.5}}))  # fmt: skip
    runs = {}
    for u in (0.0, 3.0):
        dftu = {'dftu': {'Cr': [2, u, 0.0]}} if u else {}
        results, node = run_get_node(
            CdftCalculation, **cdft_inputs(abinit_code, paw, primitive(), [2.0, 0], mesh(2), **settings, **dftu)
        )
        assert node.is_finished_ok, node.exit_message
        assert ('usepawu 1' in node.base.repository.get_object_content('aiida.abi')) == bool(u)
        runs[u] = results['output_arrays'].get_array('mag_forces')[0]
    assert runs[3.0] > runs[0.0] + 0.5


def test_initial_set_perturbs_the_dft_equilibrium_moments(abinit_code):
    """The paper's recipe (issue 14): the unperturbed cell is labelled by DFT with free moments (PAW + U, the 2-atom
    FM cell: Cr settles at 2.84 mu_B from the 2.0 it starts at), and its perturbed copies take that moment, +-15%,
    labelled by cDFT. T of a perturbed label points back to the equilibrium moment."""
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_mmtp.data.pseudo import install_paw_family
    from aiida_mmtp.workchains.initial import InitialSetWorkChain

    paw = install_paw_family().get_pseudos(elements=['Cr', 'N'])
    params = {'ecut': 15, 'pawecutdg': 30, 'tolvrs': 1e-8, 'nstep': 100, 'ratsph': {'Cr': 2.3, 'N': 1.14},
              'dftu': {'Cr': [2, 3.0, 0.0]}, 'constrained': ['Cr', 'N']}  # fmt: skip
    recipe = {'species': ['Cr', 'N'], 'moments': {'Cr': 2.0}, 'scales': [1.0], 'states': ['FM'], 'n_random': 0,
              'n_displaced': 0, 'n_perturbed': 2, 'perturbation': 0.15, 'seed': 3,
              'equilibrium_moments': True}  # fmt: skip
    abinit = {'code': abinit_code, 'pseudos': paw, 'parameters': orm.Dict(params),
              'metadata': {'options': {'resources': {'num_machines': 1}}}}  # fmt: skip
    label = {'max_concurrent': orm.Int(2), 'cdft': {'kpoints': mesh(4), 'abinit': abinit}}
    results, node = run_get_node(InitialSetWorkChain, structures={'prim': primitive()}, parameters=orm.Dict(recipe),
                                 label=label)  # fmt: skip
    assert node.is_finished_ok, node.exit_message
    (free,) = results['equilibrium_labels'].get_configurations()
    m0 = free.moments[0]
    assert 2.6 < m0 < 3.1 and np.all(free.mag_forces == 0.0)  # a free run: T = 0 at its own moments
    free_run = orm.load_node(results['equilibrium_labels'].sources[0])
    assert 'constraint_kind 0 0' in free_run.base.repository.get_object_content('aiida.abi')
    labels = results['training_set']
    assert len(labels) == 3 and len(results['configurations']) == 3 and results['failures']['n_failed'] == 0
    for cfg in labels.get_configurations()[1:]:  # the perturbed copies: cDFT at m0 +-15%, never the nominal 2.0
        assert 0.85 * m0 <= cfg.moments[0] <= 1.15 * m0 and abs(cfg.moments[0] - m0) > 0.01
        assert np.sign(cfg.mag_forces[0]) == np.sign(m0 - cfg.moments[0])  # T = -dE/dm points back to m0
    assert labels.origins[1:] == ['prim:scale1:FM:displaced0:perturbed1',
                                                        'prim:scale1:FM:displaced0:perturbed2']  # fmt: skip
