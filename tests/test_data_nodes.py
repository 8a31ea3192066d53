"""The potential and training-set Data nodes: stored, reloaded, exported exactly; fidelity keys guard merges."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import crn_cells, random_potential

from aiida_mmtp.mtp.cfg_io import read_cfg
from aiida_mmtp.mtp.evaluate import evaluate
from aiida_mmtp.mtp.mtp_io import format_mtp


@pytest.fixture
def labelled():
    pot = random_potential(level=8, n_psi=2, seed=4, symmetric=True)
    configs = [evaluate(pot, c).to_configuration(c) for c in crn_cells().values()]
    configs[1].virial = None  # a configuration without stress stays without stress
    return pot, configs


def test_potential_node(aiida_profile):
    from aiida import orm

    from aiida_mmtp.data import MtpPotentialData

    pot = random_potential(level=16, n_psi=2, seed=1, symmetric=True)
    node = MtpPotentialData(pot).store()
    loaded = orm.load_node(node.pk)
    assert isinstance(loaded, MtpPotentialData)
    assert loaded.n_params == 606 == loaded.base.attributes.get('parameters')
    assert loaded.species == ['Cr', 'N'] and loaded.base.attributes.get('level') == 16
    assert loaded.base.attributes.get('energy_mode') == 'symmetric'
    back = loaded.get_potential()
    assert np.array_equal(back.get_params(), pot.get_params()) and format_mtp(back) == format_mtp(pot)
    found = orm.QueryBuilder().append(MtpPotentialData, filters={'attributes.parameters': 606}).all(flat=True)
    assert node.pk in [n.pk for n in found]
    unnamed = pot.copy()
    unnamed.species = None
    with pytest.raises(ValueError, match='species names'):
        MtpPotentialData(unnamed)


def test_training_set_node_round_trip_and_exports(aiida_profile, tmp_path, labelled):
    from aiida import orm

    from aiida_mmtp.data import TrainingSetData

    _, configs = labelled
    fidelity = {'code': 'abinit 9.6.2', 'ecut_Ha': 20, 'kmesh': [2, 2, 2]}
    node = TrainingSetData(configs, ['Cr', 'N'], fidelity=fidelity).store()
    loaded = orm.load_node(node.pk)
    assert len(loaded) == 3 and loaded.base.attributes.get('n_atoms') == 18
    assert loaded.base.attributes.get('label_counts') == {'energy': 3, 'forces': 3, 'virial': 2, 'mag_forces': 3}
    assert loaded.fidelity == fidelity
    for a, b in zip(configs, loaded.get_configurations()):
        for name in ('positions', 'types', 'cell', 'moments', 'forces', 'virial', 'mag_forces'):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or np.array_equal(x, y), name
        assert a.energy == b.energy
    loaded.export_cfg(tmp_path / 'set.cfg')
    assert [c.energy for c in read_cfg(tmp_path / 'set.cfg')] == [c.energy for c in configs]
    loaded.export_extxyz(tmp_path / 'set.xyz')
    assert (tmp_path / 'set.xyz').read_text().count('Lattice=') == 3


def test_merged_training_sets_hold_their_labels_by_reference(aiida_profile, labelled):
    """A merge of stored sets stores no label again, however often it is merged (a campaign's iterations), and
    reads exactly as the copy it replaces: configurations, sources, k-points, origins, counts."""
    from aiida import orm

    from aiida_mmtp.calculations.functions import concatenate_training_sets, merge_training_sets
    from aiida_mmtp.data import TrainingSetData

    _, configs = labelled
    sets = []
    for k, cfg in enumerate(configs):
        one = TrainingSetData([cfg], ['Cr', 'N'], fidelity={'ecut_Ha': 20}, sources=[f'run{k}'],
                              kpoints=[((2, 2, 2), [[0.5, 0.5, 0.5]])], origins=[f'cell{k}'])  # fmt: skip
        sets.append(one.store())
    growing = sets[0]
    for new in sets[1:]:  # iteration after iteration: the last set merged with the new labels
        growing = merge_training_sets(a=growing, b=new)
    copy = concatenate_training_sets([TrainingSetData(configs, ['Cr', 'N'])])  # unstored parts: a copy
    assert not copy.by_reference and growing.by_reference
    loaded = orm.load_node(growing.pk)
    assert loaded.base.attributes.get('parts') == [s.uuid for s in sets]  # flat: the stored sets, once each
    assert loaded.base.repository.list_object_names() == []  # no array of its own
    assert len(loaded) == 3 and loaded.base.attributes.get('n_atoms') == 18
    assert loaded.base.attributes.get('label_counts') == {'energy': 3, 'forces': 3, 'virial': 2, 'mag_forces': 3}
    assert loaded.sources == ['run0', 'run1', 'run2'] and loaded.origins == ['cell0', 'cell1', 'cell2']
    assert loaded.kpoints == [((2, 2, 2), [[0.5, 0.5, 0.5]])] * 3 and loaded.fidelity == {'ecut_Ha': 20}
    for a, b in zip(configs, loaded.get_configurations()):
        for name in ('positions', 'types', 'cell', 'moments', 'forces', 'virial', 'mag_forces'):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or np.array_equal(x, y), name
        assert a.energy == b.energy
    assert merge_training_sets(a=loaded, b=loaded).base.attributes.get('parts') == [s.uuid for s in sets] * 2
    with pytest.raises(ValueError, match=r'different settings \(ecut_Ha\)'):
        merge_training_sets(a=loaded, b=TrainingSetData(configs, ['Cr', 'N'], fidelity={'ecut_Ha': 25}).store())


def test_subsets_and_screened_labels_keep_sources_kpoints_and_origins(aiida_profile, labelled):
    """A subset and hygiene's ``accepted`` keep what each kept label is (its origin), where it came from (its
    source) and its k-point sampling, in the order asked for, from a copied or a by-reference set."""
    from aiida import orm

    from aiida_mmtp.calculations.functions import merge_training_sets, screen_new_labels
    from aiida_mmtp.data import TrainingSetData
    from aiida_mmtp.workchains.functions import subset

    _, configs = labelled
    meshes = [((2, 2, 2), [[0.0, 0.0, 0.0]]), ((3, 3, 3), [[0.0, 0.0, 0.0]]), None]
    whole = TrainingSetData(configs, ['Cr', 'N'], sources=['r0', 'r1', 'r2'], kpoints=meshes,
                            origins=['a', 'b', 'c']).store()  # fmt: skip
    part = subset(whole, orm.List([2, 0]))
    assert part.origins == ['c', 'a'] and part.sources == ['r2', 'r0'] and part.kpoints == [meshes[2], meshes[0]]
    referred = merge_training_sets(a=whole, b=part)
    assert referred.by_reference and referred.origins == ['a', 'b', 'c', 'c', 'a']
    far = configs[0].copy()
    far.forces = far.forces * 0 + 5000.0  # refused: a force above max_force (the random potential's reach 1700)
    new = TrainingSetData([configs[1], far], ['Cr', 'N'], sources=['r1', 'bad'], origins=['b', 'thrown']).store()
    screened = screen_new_labels(new=new, rule=orm.Dict({'max_force': 3000.0, 'max_energy_deviation': 1e6}))
    assert screened['refused']['n_refused'] == 1 and screened['refused']['refused'][0]['source'] == 'bad'
    assert screened['accepted'].origins == ['b'] and screened['accepted'].sources == ['r1']
    with pytest.raises(ValueError, match='2 origins given for 3 configurations'):
        TrainingSetData(configs, ['Cr', 'N'], origins=['a', 'b'])


def test_training_sets_of_different_fidelity_are_not_mixed(aiida_profile, labelled):
    from aiida_mmtp.data import TrainingSetData

    _, configs = labelled
    a = TrainingSetData(configs, ['Cr', 'N'], fidelity={'ecut_Ha': 20, 'kmesh': [2, 2, 2]})
    b = TrainingSetData(configs, ['Cr', 'N'], fidelity={'ecut_Ha': 25, 'kmesh': [2, 2, 2]})
    with pytest.raises(ValueError, match=r'different settings \(ecut_Ha\)'):
        a.check_compatible(b)
    a.check_compatible(b, allow_different_fidelity=True)
    with pytest.raises(ValueError, match='different species'):
        a.check_compatible(TrainingSetData(configs, ['Fe', 'Al']))
    with pytest.raises(ValueError, match='not periodic'):
        cfg = configs[0].copy()
        cfg.cell = None
        TrainingSetData([cfg], ['Cr', 'N'])


def test_one_training_set_one_kpoint_set(aiida_profile):
    """The fidelity key holds the k-point SET a label sampled: equivalent meshes of other cells merge, others not."""
    from aiida_mmtp.calculations.functions import merge_training_sets
    from aiida_mmtp.data import TrainingSetData
    from aiida_mmtp.mtp.reference import MagneticPairPotential
    from aiida_mmtp.mtp.structures import rocksalt, supercell

    ref = MagneticPairPotential()
    half = [[0.5, 0.5, 0.5]]
    cubic, double = rocksalt(4.15), supercell(rocksalt(4.15), (2, 1, 1))
    cubic.moments, double.moments = np.tile([2.4, 0.0], 4), np.tile([2.4, 0.0], 8)
    cubic, double = ref.label(cubic), ref.label(double)
    prim = rocksalt(4.15, primitive=True)
    prim.moments = np.array([2.4, 0.0])
    prim = ref.label(prim)

    def labelled(cfg, mesh, shifts):
        key = {
            'ecut': 15,
            'kpoints': {
                'distance': 0.8,
                'shifts': shifts,
                'reference': {'cell': cfg.cell.tolist(), 'mesh': mesh, 'shifts': shifts},
            },
        }
        return TrainingSetData([cfg], ['Cr', 'N'], fidelity=key, kpoints=[(mesh, shifts)])  # fmt: skip

    eight, sixteen = labelled(cubic, [2, 2, 2], half), labelled(double, [1, 2, 2], half)
    merged = merge_training_sets(a=eight, b=sixteen)  # one k-point set, two cells
    assert len(merged) == 2 and merged.kpoints == [((2, 2, 2), half), ((1, 2, 2), half)]
    assert merged.fidelity == eight.fidelity
    gamma = labelled(cubic, [2, 2, 2], [[0.0, 0.0, 0.0]])
    two = labelled(prim, [2, 2, 2], [[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r'different settings \(kpoints\)'):
        eight.check_compatible(gamma)  # same mesh, other shift
    with pytest.raises(ValueError, match=r'different settings \(kpoints\)'):
        labelled(cubic, [1, 1, 1], [[0.0, 0.0, 0.0]]).check_compatible(two)  # the old `fast`: 2 and 8 atoms
    message = (
        r'configuration 2 was labelled on another k-point set than the training set \(mesh 2x2x2 of a '
        r'\(4\.15, 4\.15, 4\.15\) A cell and 2x2x2 of a \(2\.93, 2\.93, 2\.93\) A cell sample different'
    )
    with pytest.raises(ValueError, match=message):
        TrainingSetData([cubic, prim], ['Cr', 'N'], fidelity=eight.fidelity,
                        kpoints=[([2, 2, 2], half), ([2, 2, 2], half)])  # fmt: skip
