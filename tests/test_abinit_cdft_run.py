"""Real ABINIT runs at test size: the written cDFT input, the parsed magnetic force against a finite
difference of parsed energies, and the spin-flip symmetry the CalcJob relies on."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from aiida_mmtp.calculations.abinit_input import CdftSettings, check_sphere_overlap, needs_spin_flip, write_cdft_input
from aiida_mmtp.mtp.structures import rocksalt, supercell
from aiida_mmtp.parsers.abinit_output import parse_abo

PSP = Path('/usr/share/abinit/psp')
PSEUDOS = {'Cr': PSP / '24cr.000107.fhi', 'N': PSP / 'PseudosTM_pwteter' / '7n.pspnc'}
SETTINGS = CdftSettings(ecut=20, kmesh=(2, 2, 2), ratsph={'Cr': 2.0, 'N': 1.5}, constrained=['Cr'])


@pytest.fixture(scope='module')
def abinit():
    exe = shutil.which('abinit')
    if exe is None or not all(p.exists() for p in PSEUDOS.values()):
        pytest.fail('ABINIT is not installed: scripts/bootstrap.sh installs it (apt-get install abinit abinit-data)')
    return exe


def run_cdft(abinit, tmp_path, name, cfg, moments, settings=SETTINGS):
    work = tmp_path / name
    work.mkdir()
    for path in PSEUDOS.values():
        shutil.copy(path, work / path.name)
    symbols = ['Cr' if t == 0 else 'N' for t in cfg.types]
    text = write_cdft_input(symbols, cfg.cell, cfg.positions, np.asarray(moments, dtype=float),
                            {s: p.name for s, p in PSEUDOS.items()}, {'Cr': 24, 'N': 7}, settings)  # fmt: skip
    (work / 'run.abi').write_text(text)
    proc = subprocess.run([abinit, 'run.abi'], cwd=work, capture_output=True, text=True,
                          env={'OMP_NUM_THREADS': '1', 'PATH': '/usr/bin:/bin'})  # fmt: skip
    out = parse_abo((work / 'run.abo').read_text() if (work / 'run.abo').exists() else '', proc.stdout)
    assert proc.returncode == 0 and out.completed and out.scf_converged, (proc.returncode, out.errors)
    return out


#: the 8-atom cubic cell at Gamma only, 15 Ha, magcon_lambda 1 (40 SCF steps instead of 200), AFM1 layers
CUBIC = dataclasses.replace(SETTINGS, ecut=15.0, kmesh=(1, 1, 1), shifts=[(0.0, 0.0, 0.0)], magcon_lambda=1.0)
AFM1 = [1.8, 0.0, -1.8, 0.0, -1.8, 0.0, 1.8, 0.0]


@pytest.mark.parametrize(
    ('cell', 'moments', 'settings'),
    [(rocksalt(4.15, primitive=True), [2.0, 0.0], SETTINGS), (rocksalt(4.15), AFM1, CUBIC)],
    ids=['2-atom FM', '8-atom AFM'],
)
def test_magnetic_force_is_minus_the_energy_derivative(abinit, tmp_path, cell, moments, settings):
    """T_1 = -dE/dm_1 against a central difference of energies with the first Cr moment moved by +-h."""
    h = 0.02
    shifted = {sign: list(moments) for sign in (1, -1)}
    for sign in (1, -1):
        shifted[sign][0] += sign * h
    mid = run_cdft(abinit, tmp_path, 'mid', cell, moments, settings)
    plus = run_cdft(abinit, tmp_path, 'plus', cell, shifted[1], settings)
    minus = run_cdft(abinit, tmp_path, 'minus', cell, shifted[-1], settings)
    assert mid.moments[0] == pytest.approx(moments[0], abs=1e-4)
    fd = -(plus.energy - minus.energy) / (2 * h)
    assert abs(mid.mag_forces[0]) > 0.05  # not at the equilibrium moment: a real test of the derivative
    assert mid.mag_forces[0] == pytest.approx(fd, rel=1e-3)


def test_mirror_image_has_same_energy_and_opposite_magnetic_force(abinit, tmp_path):
    """A mixed-sign state and its mirror image (mixed signs converge fine without the flip).

    4-atom cell: the fcc primitive cell of B1 doubled along a3, two Cr with unequal opposite targets.
    """
    prim = rocksalt(4.15, primitive=True)
    cfg = supercell(prim, (1, 1, 2))
    targets = np.array([2.0, 0.0, -1.8, 0.0])
    symbols = ['Cr', 'N', 'Cr', 'N']
    assert not needs_spin_flip(symbols, targets, ['Cr']) and needs_spin_flip(symbols, -targets, ['Cr'])
    gamma_centred = dataclasses.replace(SETTINGS, shifts=((0.0, 0.0, 0.0),))  # symmetric for any lattice
    a = run_cdft(abinit, tmp_path, 'a', cfg, targets, gamma_centred)
    b = run_cdft(abinit, tmp_path, 'b', cfg, -targets, gamma_centred)
    assert np.allclose(a.moments[[0, 2]], targets[[0, 2]], atol=1e-4)
    assert b.energy == pytest.approx(a.energy, abs=1e-5)
    assert np.allclose(b.forces, a.forces, atol=1e-4)
    assert np.allclose(b.mag_forces[[0, 2]], -a.mag_forces[[0, 2]], rtol=1e-3, atol=1e-4)


def test_overlapping_spheres_are_refused_before_running():
    cfg = rocksalt(4.15)
    with pytest.raises(ValueError, match=r'atomic spheres overlap: atom 1 \(Cr, ratsph 2.5 bohr\) and atom 2 \(N'):
        check_sphere_overlap(cfg.cell, cfg.positions, ['Cr', 'N'] * 4, {'Cr': 2.5, 'N': 1.5})
    with pytest.raises(ValueError, match='no sphere radius'):
        check_sphere_overlap(cfg.cell, cfg.positions, ['Cr', 'N'] * 4, {'Cr': 2.0})
    with pytest.raises(ValueError, match='no pseudopotential for species N'):
        write_cdft_input(['Cr', 'N'], rocksalt(4.15, True).cell, rocksalt(4.15, True).positions, np.array([2.0, 0]),
                         {'Cr': 'x'}, {'Cr': 24, 'N': 7}, SETTINGS)  # fmt: skip
