"""The basis enumeration reproduces MLIP's level templates."""

from __future__ import annotations

import numpy as np
import pytest

from aiida_mmtp.mtp.basis import basis_for_level
from aiida_mmtp.mtp.mtp_io import read_mtp
from aiida_mmtp.mtp.potential import Potential


@pytest.mark.parametrize(('level', 'n_alpha', 'n_mu'), [(2, 1, 1), (6, 5, 2), (16, 92, 4)])
def test_counts(level, n_alpha, n_mu):
    t = basis_for_level(level)
    assert t.n_alpha == n_alpha
    assert t.radial_funcs_count == n_mu


def test_paper_parameter_count():
    pot = Potential.from_level(16, ['Cr', 'N'], n_phi=8, n_psi=2, m_max=[3.2, 0.1])
    assert pot.n_params == 606
    assert Potential.from_level(16, ['Cr', 'N'], n_phi=8).n_params == 222


def _basis_values(tables, basic_values):
    """Basis functions on sample environments; basic_values: dict (mu,a,b,c) -> (n_env,) values."""
    n_env = next(iter(basic_values.values())).shape[0]
    mom = np.zeros((n_env, tables.n_moments))
    for q, row in enumerate(tables.basic):
        mom[:, q] = basic_values[tuple(int(v) for v in row)]
    for i, j, mult, k in tables.times:
        mom[:, k] += mult * mom[:, i] * mom[:, j]
    return mom[:, tables.mapping]


def test_same_functions_as_mlip_level16(reference_dir):
    """Our 92 level-16 functions span exactly the space of MLIP's 92 (same basic moments, same rank)."""
    ours = basis_for_level(16)
    mlip = read_mtp(reference_dir / 'mlip' / 'pot16_rand.mtp').tables
    assert sorted(map(tuple, ours.basic.tolist())) == sorted(map(tuple, mlip.basic.tolist()))
    rng = np.random.default_rng(0)
    n_env = 600
    values = {}
    units, radial = [], []
    for _ in range(n_env):
        n_nb = rng.integers(4, 9)
        u = rng.normal(size=(n_nb, 3))
        units.append(u / np.linalg.norm(u, axis=1)[:, None])
        radial.append(rng.normal(size=(n_nb, 4)))
    for mu, a, b, c in map(tuple, ours.basic.tolist()):
        values[(mu, a, b, c)] = np.array(
            [np.sum(f[:, mu] * u[:, 0] ** a * u[:, 1] ** b * u[:, 2] ** c) for u, f in zip(units, radial)]
        )
    vo = _basis_values(ours, values)
    vm = _basis_values(mlip, values)
    vo /= np.linalg.norm(vo, axis=0)
    vm /= np.linalg.norm(vm, axis=0)
    rank_o = np.linalg.matrix_rank(vo, tol=1e-8)
    rank_m = np.linalg.matrix_rank(vm, tol=1e-8)
    assert rank_o == rank_m
    assert np.linalg.matrix_rank(np.hstack([vo, vm]), tol=1e-8) == rank_m


def test_level_out_of_range():
    with pytest.raises(ValueError, match='level'):
        basis_for_level(40)
