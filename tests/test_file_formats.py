"""`.mtp`, `.cfg` and extxyz: exact round trips, the MLIP files, and errors that name the line."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import crn_cells, random_potential

from aiida_mmtp.mtp.ase_io import read_extxyz, write_extxyz
from aiida_mmtp.mtp.cfg_io import CfgFormatError, format_cfg, read_cfg, write_cfg
from aiida_mmtp.mtp.evaluate import evaluate
from aiida_mmtp.mtp.mtp_io import MtpFormatError, format_mtp, read_mtp, write_mtp
from aiida_mmtp.mtp.potential import Potential


def _same_potential(a: Potential, b: Potential):
    assert np.array_equal(a.get_params(), b.get_params())
    for name in ('basic', 'times', 'mapping'):
        assert np.array_equal(getattr(a.tables, name), getattr(b.tables, name))
    assert (a.species, a.level, a.symmetric, a.r_min, a.r_cut, a.n_phi, a.n_psi) == (
        b.species, b.level, b.symmetric, b.r_min, b.r_cut, b.n_phi, b.n_psi)  # fmt: skip
    assert np.array_equal(a.mag_min, b.mag_min) and np.array_equal(a.mag_max, b.mag_max)


@pytest.mark.parametrize('n_psi', [1, 2])
def test_mtp_round_trip_exact(tmp_path, n_psi):
    pot = random_potential(level=16, n_psi=n_psi, seed=3, symmetric=n_psi > 1)
    write_mtp(pot, tmp_path / 'a.mtp')
    back = read_mtp(tmp_path / 'a.mtp')
    _same_potential(pot, back)
    assert format_mtp(back) == (tmp_path / 'a.mtp').read_text()


@pytest.mark.parametrize('name', ['pot16_rand.mtp', 'pot16_mag3.mtp'])
def test_mlip_files_round_trip(reference_dir, tmp_path, name):
    pot = read_mtp(reference_dir / 'mlip' / name)
    assert pot.level == 16 and pot.species is None
    write_mtp(pot, tmp_path / name)
    _same_potential(pot, read_mtp(tmp_path / name))


def test_equal_moment_ranges_written_as_mlip3_scalars(tmp_path):
    pot = Potential.from_level(6, ['Fe', 'Al'], n_psi=2, m_max=2.5)
    text = format_mtp(pot)
    assert '\tmin_val = -2.5\n' in text and '\tmax_val = 2.5\n' in text
    per_species = Potential.from_level(6, ['Cr', 'N'], n_psi=2, m_max=[3.2, 0.1])
    write_mtp(per_species, tmp_path / 'p.mtp')
    assert np.array_equal(read_mtp(tmp_path / 'p.mtp').mag_max, [3.2, 0.1])


def test_cfg_round_trip_exact(tmp_path):
    pot = random_potential(level=8, n_psi=2, seed=1)
    configs = []
    for cfg in crn_cells().values():
        labelled = evaluate(pot, cfg).to_configuration(cfg)
        labelled.grades = np.linspace(0, 3, cfg.natoms)
        labelled.features = {'origin': 'test'}
        configs.append(labelled)
    configs.append(crn_cells()['cubic8'].clear_labels())  # unlabelled, with moments
    write_cfg(configs, tmp_path / 'a.cfg')
    back = read_cfg(tmp_path / 'a.cfg')
    assert len(back) == len(configs)
    for a, b in zip(configs, back):
        for name in ('positions', 'types', 'cell', 'moments', 'forces', 'virial', 'mag_forces', 'grades'):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or np.array_equal(x, y), name
        assert a.energy == b.energy and a.features == b.features
    assert ''.join(format_cfg(c) for c in back) == (tmp_path / 'a.cfg').read_text()


def test_reads_mlip3_magnetic_output(reference_dir):
    cfg = read_cfg(reference_dir / 'mlip' / 'three_mag_mlip3.cfg')[0]
    assert cfg.natoms == 64 and cfg.moments[0] == pytest.approx(2.410175)
    # en_der_mx is +dE/dm; our magnetic force is its negative
    assert cfg.mag_forces[0] == pytest.approx(-1.4840585113848954e02)
    assert cfg.features['EFS_by'] == 'MultiMTP93'


def test_extxyz_round_trip(tmp_path):
    pot = random_potential(level=8, n_psi=2, seed=1)
    cfg = crn_cells()['triclinic8']
    labelled = evaluate(pot, cfg).to_configuration(cfg)
    write_extxyz([labelled], tmp_path / 'a.xyz', ['Cr', 'N'])
    back = read_extxyz(tmp_path / 'a.xyz', ['Cr', 'N'])[0]
    assert np.array_equal(back.types, cfg.types)
    assert np.allclose(back.positions, cfg.positions, atol=1e-7)
    assert np.allclose(back.moments, cfg.moments)
    assert np.allclose(back.mag_forces, labelled.mag_forces)
    assert np.allclose(back.forces, labelled.forces)
    assert np.allclose(back.stress, labelled.stress)
    assert back.energy == pytest.approx(labelled.energy)


BAD_CFG = """BEGIN_CFG
 Size
    2
 Supercell
    4.0 0.0 0.0
    0.0 4.0 0.0
    0.0 0.0 4.0
 AtomData:  id type cartes_x cartes_y cartes_z
    1 0 0.0 0.0 0.0
    2 1 2.0 0.0 zero
END_CFG
"""


def test_malformed_cfg_names_line(tmp_path):
    path = tmp_path / 'bad.cfg'
    path.write_text(BAD_CFG)
    with pytest.raises(CfgFormatError, match=r'bad\.cfg:10: not a number'):
        read_cfg(path)
    path.write_text(BAD_CFG.replace(' AtomData:', ' Stress: 1 2 3\n AtomData:'))
    with pytest.raises(CfgFormatError, match=r"bad\.cfg:8: the old 'Stress' keyword"):
        read_cfg(path)
    path.write_text(BAD_CFG.replace('zero', '0.0').replace('END_CFG\n', ''))
    with pytest.raises(CfgFormatError, match='no END_CFG'):
        read_cfg(path)


def test_malformed_mtp_names_line(tmp_path, reference_dir):
    lines = (reference_dir / 'mlip' / 'pot16_rand.mtp').read_text().splitlines()
    row = next(k for k, line in enumerate(lines) if line.strip().startswith('{'))
    lines[row] = lines[row].replace('{', '{1.0, ', 1)
    (tmp_path / 'bad.mtp').write_text('\n'.join(lines))
    with pytest.raises(MtpFormatError, match=rf'bad\.mtp:{row + 1}: radial function has 9 coefficients, need 8'):
        read_mtp(tmp_path / 'bad.mtp')
    (tmp_path / 'bad.mtp').write_text('MTP\nspecies_count = two\n')
    with pytest.raises(MtpFormatError, match='missing'):
        read_mtp(tmp_path / 'bad.mtp')
    (tmp_path / 'bad.mtp').write_text('hello\n')
    with pytest.raises(MtpFormatError, match=r'bad\.mtp:1: not an MTP potential file'):
        read_mtp(tmp_path / 'bad.mtp')
