"""Our engine reproduces MLIP-3's own numbers (plain energy mode)."""

from __future__ import annotations

import numpy as np
import pytest

from aiida_mmtp.mtp.cfg_io import read_cfg
from aiida_mmtp.mtp.evaluate import evaluate
from aiida_mmtp.mtp.mtp_io import read_mtp

CASES = {
    'nonmagnetic': ('pot16_rand.mtp', 'five.cfg', 'five_mlip3_lossless.cfg', 'five_mlip3_dEdtheta.txt'),
    'magnetic': ('pot16_mag3.mtp', 'three_mag.cfg', 'three_mag_mlip3.cfg', 'three_mag_mlip3_dEdtheta.txt'),
}


def _max_rel(ours, ref):
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


@pytest.mark.parametrize('case', list(CASES))
def test_matches_mlip3(reference_dir, case):
    pot_file, inp, out, dth = (reference_dir / 'mlip' / f for f in CASES[case])
    pot = read_mtp(pot_file)
    configs, refs, grads = read_cfg(inp), read_cfg(out), np.loadtxt(dth)
    assert len(configs) == len(refs) == len(grads)
    for cfg, ref, grad in zip(configs, refs, grads):
        res = evaluate(pot, cfg, gradient=True, symmetric=False)
        assert abs(res.energy - ref.energy) <= 1e-8 * abs(ref.energy)
        assert _max_rel(res.forces, ref.forces) <= 1e-7
        assert _max_rel(res.virial, ref.virial) <= 1e-7
        assert _max_rel(res.grad, grad) <= 1e-7
        if ref.mag_forces is not None:
            assert _max_rel(res.mag_forces, ref.mag_forces) <= 1e-7


def test_normal_precision_output_agrees(reference_dir):
    """MLIP-3's default (6-decimal) output file agrees to its printed precision."""
    pot = read_mtp(reference_dir / 'mlip' / 'pot16_rand.mtp')
    for cfg, ref in zip(
        read_cfg(reference_dir / 'mlip' / 'five.cfg'), read_cfg(reference_dir / 'mlip' / 'five_mlip3.cfg')
    ):
        res = evaluate(pot, cfg)
        assert np.allclose(res.forces, ref.forces, atol=1e-6, rtol=0)
        assert res.energy == pytest.approx(ref.energy, abs=1e-5)
