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
def test_sweep_tables_build_every_monomial_and_its_slope(level):
    """The sweep's tables, checked on a random unit vector against u_x^a u_y^b u_z^c: monomial k is its parent's
    times u[axis] (parents first, monomials by degree), each basic moment points at the monomial of its powers,
    the build runs give every monomial, their reverse gives sum_k W_k d(monomial k)/du and their forward mode the
    change along du (against central differences), and the moment runs cover every basic moment once, with its
    monomial and radial function."""
    from aiida_mmtp.mtp.kernels import monomial_tables, sweep_runs

    basic = basis_for_level(level).basic
    powers, of_basic, parent, axis = monomial_tables(basic)
    np.testing.assert_array_equal(powers[of_basic], basic[:, 1:])
    assert np.all(parent[1:] < np.arange(1, len(parent)))
    assert np.all(np.diff(powers.sum(axis=1)) >= 0)
    u = np.array([0.48, -0.6, 0.64])
    exact = np.prod(u**powers, axis=1)
    by_mu, build, moments = sweep_runs(basic, of_basic, parent, axis)
    mono = np.full(len(powers), np.nan)
    mono[0] = 1.0
    for k0, q0, n, ax in build.astype(int):
        assert np.all(parent[k0 : k0 + n] == np.arange(q0, q0 + n)) and np.all(axis[k0 : k0 + n] == ax)
        mono[k0 : k0 + n] = mono[q0 : q0 + n] * u[ax]
    np.testing.assert_allclose(mono, exact, rtol=1e-14)
    # reverse (forces) and forward (tangent) modes through the runs, against central differences
    w = np.random.default_rng(level).normal(size=len(powers))
    wk, g = w.copy(), np.zeros(3)
    for k0, q0, n, ax in build.astype(int)[::-1]:
        g[ax] += wk[k0 : k0 + n] @ mono[q0 : q0 + n]
        wk[q0 : q0 + n] += wk[k0 : k0 + n] * u[ax]
    du = np.array([0.3, -0.2, 0.5])
    tmono = np.zeros(len(powers))
    for k0, q0, n, ax in build.astype(int):
        tmono[k0 : k0 + n] = tmono[q0 : q0 + n] * u[ax] + mono[q0 : q0 + n] * du[ax]
    for d in range(3):
        step = np.zeros(3)
        step[d] = 1e-6
        numeric = (np.prod((u + step) ** powers, axis=1) - np.prod((u - step) ** powers, axis=1)) / 2e-6
        assert g[d] == pytest.approx(w @ numeric, rel=1e-8)
    numeric = (np.prod((u + 1e-6 * du) ** powers, axis=1) - np.prod((u - 1e-6 * du) ** powers, axis=1)) / 2e-6
    np.testing.assert_allclose(tmono, numeric, atol=1e-8)
    assert sorted(by_mu) == list(range(len(basic)))
    seen = np.zeros(len(basic), dtype=int)
    for s0, k0, n, mu in moments.astype(int):
        np.testing.assert_array_equal(of_basic[by_mu[s0 : s0 + n]], np.arange(k0, k0 + n))
        assert np.all(basic[by_mu[s0 : s0 + n], 0] == mu)
        seen[s0 : s0 + n] += 1
    assert np.all(seen == 1)
    if level == 16:  # three build runs per degree, one moment run per radial function
        assert (len(build), len(moments)) == (18, 4)
