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


@pytest.mark.parametrize('level', [2, 6, 16, 22])
def test_monomial_tables_build_every_monomial_from_its_parent(level):
    """The sweep's tables: monomial k is its parent's times u[axis] (parents first), each basic moment points at
    the monomial of its powers, and lower/power give the derivative of each monomial; checked on the values at a
    random unit vector against u_x^a u_y^b u_z^c."""
    from aiida_mmtp.mtp.kernels import monomial_tables, mu_segments

    basic = basis_for_level(level).basic
    powers, of_basic, lower, power, parent, axis = monomial_tables(basic)
    np.testing.assert_array_equal(powers[of_basic], basic[:, 1:])
    assert np.all(parent[1:] < np.arange(1, len(parent)))
    u = np.array([0.48, -0.6, 0.64])
    exact = np.prod(u**powers, axis=1)
    mono = np.ones(len(powers))
    for k in range(1, len(powers)):
        mono[k] = mono[parent[k]] * u[axis[k]]
    np.testing.assert_allclose(mono, exact, rtol=1e-14)
    for d in range(3):
        step = np.zeros(3)
        step[d] = 1e-6
        numeric = (np.prod((u + step) ** powers, axis=1) - np.prod((u - step) ** powers, axis=1)) / 2e-6
        np.testing.assert_allclose(power[:, d] * exact[lower[:, d]], numeric, atol=1e-8)
    by_mu, start = mu_segments(basic, basis_for_level(level).radial_funcs_count)
    assert sorted(by_mu) == list(range(len(basic)))
    for mu in range(len(start) - 1):
        assert np.all(basic[by_mu[start[mu] : start[mu + 1]], 0] == mu)
