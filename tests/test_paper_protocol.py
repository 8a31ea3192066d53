"""The `paper` protocol as the paper ran it (issue 14), checked without DFT, and its first inputs checked by ABINIT.

Paper (Kotykhov et al., sec. III.A): 18 ideal cells at a = 4.13, 4.15, 4.17 A (FM, AFM, 4 random states), 54 with
displaced atoms, 162 with perturbed moments; 32 shear cells (+-1% of xx, yz for FM and five random states, of xx,
xy, xz, zz for AFM); MD at 300 K and 1000 K from 4.12 to 4.20 A for FM, AFM and 10 random states; one 4x4x4
k-mesh; 64-atom cells.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter

import numpy as np
import pytest
from ase.units import Bohr

from aiida_mmtp.protocols import get_protocol_inputs


@pytest.fixture(scope='module')
def paper_codes(aiida_profile, tmp_path_factory):
    """Localhost ABINIT and mmtp codes (module scope: the paper campaign is built once), PAW family installed."""
    import sys
    from pathlib import Path

    from aiida import orm

    from aiida_mmtp.data.pseudo import install_nc_family, install_paw_family

    install_nc_family()
    install_paw_family()
    work = str(tmp_path_factory.mktemp('work'))
    computer = orm.Computer(label='paper-localhost', hostname='localhost', transport_type='core.local',
                            scheduler_type='core.direct', workdir=work).store()  # fmt: skip
    computer.configure()
    abinit = orm.InstalledCode(computer=computer, filepath_executable=shutil.which('abinit') or '/usr/bin/abinit',
                               default_calc_job_plugin='mmtp.abinit.cdft', label='abinit').store()  # fmt: skip
    mmtp = orm.InstalledCode(computer=computer, filepath_executable=str(Path(sys.executable).with_name('mmtp')),
                             default_calc_job_plugin='mmtp.train', label='mmtp').store()  # fmt: skip
    return abinit, mmtp


@pytest.fixture(scope='module')
def paper(paper_codes):
    """The paper campaign's builder, its cells and its stages' start configurations (as prepare_stage makes them;
    the shear cells at their nominal moments: the campaign equilibrates those moments first, `prepare`)."""
    from aiida_mmtp.workchains.campaign import CampaignWorkChain, _stages
    from aiida_mmtp.workchains.functions import configurations, structure_to_configuration

    builder = CampaignWorkChain.get_builder_from_protocol(*paper_codes, protocol='paper')
    species = builder.potential.species
    cells = {k: structure_to_configuration(s, species) for k, s in builder.structures.items()}
    moments = builder.magnetic_moments.get_dict()
    initial = configurations(cells, {**builder.initial.get_dict(), 'species': species, 'moments': moments})
    stages = {}
    for st in _stages(builder):
        if st['start'] == 'ideal':
            params = {**builder.initial.get_dict(), 'species': species, 'moments': moments, 'scales': st['scales'],
                      'states': st['states'], 'n_random': st['n_random'], 'seed': st['seed'], 'n_displaced': 0,
                      'n_perturbed': 0, 'strains': st['strains']}  # fmt: skip
            stages[st['name']] = configurations(cells, params)
        else:
            stages[st['name']] = initial
    return builder, initial, stages


def _lattice(cfg) -> float:
    return round(float(np.linalg.norm(cfg.cell[0])) / 2, 6)  # the 2x2x2 supercell of the conventional cell


def _state(cfg) -> str:
    return cfg.features['origin'].split(':')[2]


def test_initial_set_is_the_papers_162(paper):
    builder, initial, _ = paper
    assert len(initial) == 162 and all(cfg.natoms == 64 for cfg in initial)
    # the 54 unperturbed cells go to DFT with free moments first (tests/test_cdft_workchains.py runs that step); here,
    # the recipe's nominal moments: the start of those runs, and of the perturbations when the step is switched off
    assert builder.initial['equilibrium_moments'] is True
    origins = [cfg.features['origin'] for cfg in initial]
    ideal = [o for o in origins if o.endswith(':displaced0:perturbed0')]
    unperturbed = [o for o in origins if o.endswith(':perturbed0')]
    assert len(ideal) == 18 and len(unperturbed) == 54  # 3 lattice parameters x (FM, AFM, 4 random); x 3
    assert sorted(Counter(_lattice(c) for c in initial)) == [4.13, 4.15, 4.17]  # A, as the paper gives them
    assert Counter(_state(c).split('-')[0] for c in initial) == {'FM': 27, 'AFM': 27, 'random': 108}
    cr = initial[0].types == 0
    by_parent = {}
    for cfg in initial:
        assert np.all(cfg.moments[~cr] == 0.0)
        parent = cfg.features['origin'].rsplit(':', 1)[0]
        by_parent.setdefault(parent, []).append(cfg.moments[cr])
    for group in by_parent.values():  # nominal 2.0 mu_B, then two copies perturbed by at most 15% (signs kept)
        assert np.allclose(np.abs(group[0]), 2.0) and np.sum(group[0] > 0) in (16, 32)  # AFM, random 50/50; FM
        for perturbed in group[1:]:
            ratio = perturbed / group[0]
            assert np.all((ratio >= 0.85) & (ratio <= 1.15)) and not np.allclose(ratio, 1.0)
    # random states are drawn once: the same 4 sign patterns at every lattice parameter
    patterns = {(_state(c), _lattice(c), tuple(np.sign(c.moments[cr]))) for c in initial if 'random' in _state(c)}
    assert len({(state, signs) for state, _, signs in patterns}) == 4


def test_shear_stage_has_the_papers_32_cells_with_per_state_components(paper):
    builder, _, stages = paper
    shear = stages['shear']
    assert len(shear) == 32
    (stage,) = [st for st in builder.stages.get_list() if st['name'] == 'shear']
    assert stage['prepare'] == {'kind': 'equilibrate'}  # the paper strains the equilibrated cells
    components = {}
    for cfg in shear:
        origin = cfg.features['origin']
        component, eps = origin.rsplit(':strain ', 1)[1].split()
        components.setdefault(_state(cfg).split('-')[0], Counter())[(component, float(eps))] += 1
    assert set(components['FM']) == {('xx', 0.01), ('xx', -0.01), ('yz', 0.01), ('yz', -0.01)}
    assert set(components['AFM']) == {(c, e) for c in ('xx', 'xy', 'xz', 'zz') for e in (0.01, -0.01)}
    assert components['random'] == {pair: 5 for pair in components['FM']}  # five random states
    # the strain is the one named: +1% xy on a 2x2x2 cell of a = 4.15 A gives cell[0, 1] = 0.5% of 8.3 A
    xy = next(c for c in shear if c.features['origin'].endswith('strain xy +0.01'))
    assert xy.cell[0, 1] == pytest.approx(0.005 * 8.3) and xy.cell[0, 0] == pytest.approx(8.3)


def test_md_stages_share_ten_random_states_over_nine_lattice_parameters(paper):
    _, _, stages = paper
    for name in ('md-300K', 'md-1000K'):
        starts = stages[name]
        assert len(starts) == 9 * 12
        lattice = sorted({_lattice(c) for c in starts})
        assert lattice == [4.12, 4.13, 4.14, 4.15, 4.16, 4.17, 4.18, 4.19, 4.2]
        cr = starts[0].types == 0
        random = [c for c in starts if 'random' in _state(c)]
        patterns = Counter(tuple(np.sign(c.moments[cr])) for c in random)
        assert len(patterns) == 10 and set(patterns.values()) == {9}  # each state at every lattice parameter
        assert all(np.sum(np.array(p) > 0) == 16 for p in patterns)  # 50/50
    same = [tuple(c.moments) for c in stages['md-300K']] == [tuple(c.moments) for c in stages['md-1000K']]
    assert same  # the 1000 K stage starts from the same 108 states


def test_one_kmesh_and_no_sphere_overlap_above_r_min(paper):
    from aiida_mmtp.calculations.abinit_input import sphere_radii_problem
    from aiida_mmtp.workchains.label import kpoint_problem, kpoint_sampling, mesh_of

    builder, initial, stages = paper
    cdft = builder.label.cdft
    rule, shifts = kpoint_sampling(cdft)
    assert rule == {'mesh': [4, 4, 4]} and shifts == [[0.5, 0.5, 0.5]]  # what the fidelity key records
    cells = [c.cell for c in initial] + [c.cell for configs in stages.values() for c in configs]
    assert {tuple(mesh_of(cell, rule)) for cell in cells} == {(4, 4, 4)}
    assert kpoint_problem(cells, cdft) is None
    params = cdft.abinit.parameters.get_dict()
    r_min = builder.potential.base.attributes.get('min_dist')
    assert (params['ratsph']['Cr'] + params['ratsph']['N']) * Bohr <= r_min
    assert sphere_radii_problem(params['ratsph'], ['Cr', 'N'], r_min) is None
    # the rule catches the paper's own R_min with these PAW spheres
    assert 'raise potential min_dist to at least 1.820 A' in sphere_radii_problem(params['ratsph'], ['Cr', 'N'], 1.7)


def test_overrides_in_angstrom_and_bad_strains_are_named(paper_codes):
    from aiida_mmtp.workchains.campaign import CampaignWorkChain, validate_inputs

    with pytest.raises(ValueError, match='initial: give scales .ratios. or lattice_parameters .A., not both'):
        CampaignWorkChain.get_builder_from_protocol(
            *paper_codes, protocol='paper', overrides={'initial': {'scales': [1.0]}}
        )
    stages = get_protocol_inputs('campaign', 'fast')['stages']
    stages[1]['strains'] = {'FM': [['xx', 0.01]], 'PM': [['xx', 0.01]]}
    builder = CampaignWorkChain.get_builder_from_protocol(*paper_codes, protocol='fast', overrides={'stages': stages})
    assert validate_inputs(dict(builder._inputs(prune=True)), None) == (
        'stage shear: strains for unknown states PM (choose from FM, AFM, random)'
    )
    stages[1]['strains'] = {'AFM': [['xw', 0.01]]}
    builder = CampaignWorkChain.get_builder_from_protocol(*paper_codes, protocol='fast', overrides={'stages': stages})
    assert 'stage shear: strain' in validate_inputs(dict(builder._inputs(prune=True)), None)
    stages[1]['strains'] = [['yz', 0.01]]
    stages[1]['prepare'] = {'kind': 'md'}
    builder = CampaignWorkChain.get_builder_from_protocol(*paper_codes, protocol='fast', overrides={'stages': stages})
    assert validate_inputs(dict(builder._inputs(prune=True)), None) == (
        'stage shear: prepare takes {kind: equilibrate or relax, ...} for ideal cells'
    )
    overlap = {'cdft': {'parameters': {'ratsph': {'Cr': 2.3, 'N': 1.2}}}}
    builder = CampaignWorkChain.get_builder_from_protocol(*paper_codes, protocol='fast', overrides=overlap)
    assert validate_inputs(dict(builder._inputs(prune=True)), None).startswith(
        'cdft: ratsph Cr 2.3 + N 1.2 bohr = 1.852 A: their spheres overlap for Cr-N pairs between 1.7 A'
    )


@pytest.mark.skipif(shutil.which('abinit') is None, reason='ABINIT is not installed')
def test_first_input_of_each_stage_passes_abinit_dry_run(paper, tmp_path, monkeypatch):
    """Each stage's first cDFT input for the 64-atom cell, written by CdftCalculation itself, is accepted by
    ABINIT's own input check (``abinit --dry-run``: parses and validates, no SCF)."""
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_mmtp.calculations.cdft import CdftCalculation
    from aiida_mmtp.mtp.structures import perturb_moments, rattle

    builder, initial, stages = paper
    monkeypatch.chdir(tmp_path)  # AiiDA writes dry runs under ./submit_test
    rng = np.random.default_rng(0)
    firsts = {'initial': initial[0]}
    for name, configs in stages.items():  # what an AL stage labels: a displaced start with off-equilibrium moments
        cfg = configs[0] if name == 'shear' else rattle(configs[0], 0.05, rng)
        if name != 'shear':
            cfg.moments = perturb_moments(configs[0].moments, 0.15, rng)
        firsts[name] = cfg
    abinit = builder.label.cdft.abinit
    species = builder.potential.species
    for name, cfg in firsts.items():
        structure = orm.StructureData(cell=cfg.cell.tolist())
        for position, t in zip(cfg.positions, cfg.types):
            structure.append_atom(position=tuple(position), symbols=species[t])
        moments = orm.ArrayData()
        moments.set_array('moments', cfg.moments)
        _, node = run_get_node(CdftCalculation, code=abinit.code, structure=structure, moments=moments,
                               parameters=abinit.parameters, pseudos=abinit.pseudos, kpoints=builder.label.cdft.kpoints,
                               metadata={'dry_run': True, 'store_provenance': False,
                                         'options': abinit.metadata.options})  # fmt: skip
        folder = node.dry_run_info['folder']
        done = subprocess.run(['abinit', CdftCalculation._INPUT, '--dry-run'], cwd=folder, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        text = done.stdout + done.stderr
        assert done.returncode == 0 and 'ERROR' not in text, f'stage {name}: ABINIT refused its input:\n{text[-3000:]}'
