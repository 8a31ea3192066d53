"""maxvol, the active set, extrapolation grades and selection on known cases."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import magnetic_crn

from aiida_mmtp.mtp.potential import Potential
from aiida_mmtp.mtp.reference import MagneticPairPotential
from aiida_mmtp.mtp.selection import ActiveSet, b_rows, maxvol
from aiida_mmtp.mtp.structures import rattle, rocksalt


def test_maxvol_bounds_every_row():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(400, 30)) * rng.uniform(0.1, 10, size=30)
    a, a_inv, source = np.eye(30), np.eye(30), np.full(30, -1)
    maxvol(rows, a, a_inv, source, tol=1e-3)
    assert np.all(source >= 0)
    assert np.allclose(a, rows[source])
    assert np.allclose(a_inv @ a, np.eye(30), atol=1e-8)
    assert np.abs(rows @ a_inv).max() <= 1 + 1e-3 + 1e-9


@pytest.fixture(scope='module')
def trained():
    """A small potential fitted to reference labels, and its training set."""
    from aiida_mmtp.mtp.fit import fit

    ref = MagneticPairPotential()
    train = [ref.label(magnetic_crn(rocksalt(4.15), seed=k, amplitude=0.06)) for k in range(12)]
    pot = Potential.from_level(6, ['Cr', 'N'], n_phi=3, n_psi=2, m_max=[3.2, 0.5], seed=1)
    fit(pot, train, max_iter=100)
    return pot, train


def test_training_configurations_grade_at_most_one(trained):
    pot, train = trained
    assert len(train) < pot.n_params  # unit rows fill the rest
    als = ActiveSet.build(pot, train)
    grades = als.grades(b_rows(pot, train))
    assert grades.max() <= 1 + 1e-3 + 1e-9


def test_distorted_configuration_grades_high(trained):
    pot, train = trained
    als = ActiveSet.build(pot, train)
    near = magnetic_crn(rocksalt(4.15), seed=100, amplitude=0.06)
    far = rattle(rocksalt(3.6), 0.3, np.random.default_rng(1))
    far.moments = np.where(far.types == 0, 3.1, 0.4)
    g_near, g_far = als.grade(pot, near), als.grade(pot, far)
    assert g_far > 10 * max(g_near, 1.0)


def test_selection_never_picks_a_duplicate_twice(trained):
    pot, train = trained
    als = ActiveSet.build(pot, train)
    candidates = [rattle(rocksalt(s), 0.2, np.random.default_rng(k)) for k, s in enumerate((3.8, 3.9, 4.4))]
    for c in candidates:
        c.moments = np.where(c.types == 0, 2.9, 0.2)
    pool = candidates + [c.copy() for c in candidates] + [candidates[0].copy()]
    rows = b_rows(pot, pool)
    new, chosen = als.select(rows)
    assert len(chosen) >= 1
    picked = [tuple(np.round(pool[k].positions.ravel(), 12)) for k in chosen]
    assert len(picked) == len(set(picked))
    # after the update every candidate is within the new active set's span
    assert new.grades(rows).max() <= 1 + 1e-3 + 1e-9
    # a cap keeps at most N
    _, capped = als.select(rows, max_new=1)
    assert len(capped) == 1


def test_active_set_file_round_trip_and_mismatch(tmp_path, trained):
    pot, train = trained
    als = ActiveSet.build(pot, train)
    als.save(tmp_path / 'pot.als')
    back = ActiveSet.load(tmp_path / 'pot.als')
    assert np.array_equal(back.a, als.a) and np.array_equal(back.source, als.source)
    # the file holds A alone (half the bytes of A and A^-1); A inverted again grades as the A^-1 maxvol kept
    assert (tmp_path / 'pot.als').stat().st_size < 1.1 * als.a.nbytes
    rows, _ = als.rows(pot, train)
    np.testing.assert_allclose(back.grades(rows), als.grades(rows), rtol=1e-9, atol=1e-12)
    back.check(pot)
    other = pot.copy()
    other.moment_coeffs[0] += 1e-3
    with pytest.raises(ValueError, match='rebuild it after fitting'):
        back.check(other)
    (tmp_path / 'bad.als').write_text('nonsense')
    with pytest.raises(ValueError, match='not an active-set file'):
        ActiveSet.load(tmp_path / 'bad.als')
