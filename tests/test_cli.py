"""The `mmtp` command line: info, new, calc-efs, and errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from aiida_mmtp.mtp.cfg_io import read_cfg


def mmtp(*args, cwd=None):
    return subprocess.run(
        [sys.executable, '-m', 'aiida_mmtp.mtp.cli', *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def test_new_and_info_paper_potential(tmp_path):
    pot = tmp_path / 'crn.mtp'
    r = mmtp('new', pot, '--level', 16, '--species', 'Cr', 'N', '--radial-basis-size', 8,
             '--magnetic-basis-size', 2, '--m-max', 3.2, 0.1)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = mmtp('info', pot)
    assert r.returncode == 0, r.stderr
    assert 'parameters       606' in r.stdout
    assert 'species          Cr, N' in r.stdout and 'level            16' in r.stdout
    info = json.loads(mmtp('info', pot, '--json').stdout)
    assert info['parameters'] == 606 and info['magnetic_basis_size'] == 2 and info['radial_basis_size'] == 8


def test_calc_efs_reproduces_mlip3(tmp_path, reference_dir):
    mlip = reference_dir / 'mlip'
    out = tmp_path / 'out.cfg'
    r = mmtp('calc-efs', mlip / 'pot16_mag3.mtp', mlip / 'three_mag.cfg', out, '--dedtheta', tmp_path / 'g.txt')
    assert r.returncode == 0, r.stderr
    ours, ref = read_cfg(out), read_cfg(mlip / 'three_mag_mlip3.cfg')
    for a, b in zip(ours, ref):
        assert abs(a.energy - b.energy) <= 1e-8 * abs(b.energy)
        assert np.max(np.abs(a.mag_forces - b.mag_forces)) <= 1e-7 * np.max(np.abs(b.mag_forces))
    assert np.allclose(np.loadtxt(tmp_path / 'g.txt'), np.loadtxt(mlip / 'three_mag_mlip3_dEdtheta.txt'), rtol=1e-7)


def test_errors_exit_2_with_a_message(tmp_path, reference_dir):
    mlip = reference_dir / 'mlip'
    r = mmtp('calc-efs', mlip / 'pot16_mag3.mtp', mlip / 'five.cfg', tmp_path / 'o.cfg')
    assert r.returncode == 2
    assert 'five.cfg configuration 1 has no magnetic moments' in r.stderr
    r = mmtp('info', tmp_path / 'missing.mtp')
    assert r.returncode == 2 and 'missing.mtp: cannot read potential file' in r.stderr
