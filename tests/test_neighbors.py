"""The cell-list neighbour list against the all-pairs one, and the linear ``min_distance``."""

from __future__ import annotations

import tracemalloc

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiida_mmtp.mtp import neighbors
from aiida_mmtp.mtp.configuration import Configuration
from aiida_mmtp.mtp.neighbors import neighbor_list
from aiida_mmtp.mtp.structures import min_distance, rattle, rocksalt, supercell

PRIMITIVE_FCC = 0.5 * 4.15 * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])


def both(positions, cell, r_cut):
    """The all-pairs and the cell list, built afresh."""
    pairs = neighbor_list(positions, cell, r_cut, method='pairs', reuse=False)
    cells = neighbor_list(positions, cell, r_cut, method='cells', reuse=False)
    return pairs, cells


def assert_same(a, b):
    """Same atoms' slices, same neighbours in the same order, same vectors to 1e-12 A."""
    assert np.array_equal(a[0], b[0])
    assert np.array_equal(a[1], b[1])
    np.testing.assert_allclose(b[2], a[2], rtol=0, atol=1e-12)


def pair_set(lists):
    """{(i, j, vector rounded to 1e-9 A)}: the list as a set, whatever its order."""
    offsets, nbr, vec = lists
    centre = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    return {(int(i), int(j), *np.round(v, 9)) for i, j, v in zip(centre, nbr, vec)}


def crn(rep, amplitude=0.1, seed=0):
    return rattle(supercell(rocksalt(4.15), rep), amplitude, np.random.default_rng(seed))


def brute_min_distance(cfg: Configuration) -> float:
    """Every pair and every image within twice the longest cell vector (the former O(N^2) way)."""
    if cfg.cell is None:
        r = np.linalg.norm(cfg.positions[:, None] - cfg.positions[None], axis=2)
        np.fill_diagonal(r, np.inf)
        return float(r.min())
    cutoff = 2.0 * float(np.max(np.linalg.norm(cfg.cell, axis=1)))
    _, _, vec = neighbor_list(cfg.positions, cfg.cell, cutoff, method='pairs', reuse=False)
    return float(np.sqrt((vec**2).sum(axis=1)).min())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 40),
    lengths=st.tuples(*[st.floats(2.0, 12.0)] * 3),
    shear=st.tuples(*[st.floats(-0.9, 0.9)] * 3),
    r_cut=st.floats(0.5, 9.0),
    seed=st.integers(0, 2**16),
)
def test_random_triclinic_cells(n, lengths, shear, r_cut, seed):
    """Any cell shape and size against the cutoff, atoms also outside the cell (wrapped)."""
    cell = np.diag(lengths)
    cell[1, 0], cell[2, 0], cell[2, 1] = shear[0] * lengths[0], shear[1] * lengths[0], shear[2] * lengths[1]
    positions = np.random.default_rng(seed).uniform(-0.5, 1.5, (n, 3)) @ cell
    pairs, cells = both(positions, cell, r_cut)
    assert_same(pairs, cells)


@pytest.mark.parametrize('r_cut', [2.0, 5.0, 9.5])
def test_sheared_cell(r_cut):
    """A strongly sheared (triclinic) 64-atom cell: faces far from orthogonal."""
    cfg = crn((2, 2, 2), amplitude=0.2, seed=3)
    shear = np.array([[1.0, 0.0, 0.0], [0.7, 1.0, 0.0], [-0.6, 0.5, 1.0]])
    pairs, cells = both(cfg.positions @ shear.T, cfg.cell @ shear.T, r_cut)
    assert_same(pairs, cells)
    assert pair_set(pairs) == pair_set(cells)


@pytest.mark.parametrize('r_cut', [2.5, 5.0, 8.0])
def test_primitive_cell_smaller_than_cutoff(r_cut):
    """Two atoms in the fcc primitive cell (2.93 A vectors): each sees many images of each atom and of itself."""
    positions = np.array([[0.0, 0.0, 0.0], [2.075, 0.0, 0.0]])
    pairs, cells = both(positions, PRIMITIVE_FCC, r_cut)
    assert_same(pairs, cells)
    n_per_atom = np.diff(cells[0])
    assert n_per_atom[0] == n_per_atom[1] >= 6  # six images of the other atom at least
    if r_cut == 2.5:
        assert np.all(cells[1][: n_per_atom[0]] == 1)
    if r_cut == 5.0:  # rocksalt shells 2.075 (6), 2.93 (12), 3.59 (8), 4.15 (6), 4.64 (24) A
        assert n_per_atom[0] == 56


def test_single_atom_sees_its_images():
    cell = np.array([[3.0, 0.0, 0.0], [1.0, 3.0, 0.0], [0.0, 0.5, 3.0]])
    pairs, cells = both(np.array([[0.3, 0.2, 0.1]]), cell, 6.5)
    assert_same(pairs, cells)
    assert len(cells[1]) > 0 and np.all(cells[1] == 0)


def test_atoms_on_cell_faces():
    """Fractional coordinates of exactly 0, and just below 0 (wrapped to 1 - 1e-17, which rounds to 1)."""
    cfg = crn((3, 3, 3), amplitude=0.0)
    positions = cfg.positions.copy()
    positions[::5] -= 1e-17
    positions[1::7] += cfg.cell[0]  # outside the cell
    assert_same(*both(positions, cfg.cell, 5.0))


@pytest.mark.parametrize('periodic', [True, False])
def test_512_atoms(periodic):
    """A 512-atom CrN cell (the size where 'auto' switches to the cell list) and the same atoms as a cluster."""
    cfg = crn((4, 4, 4), seed=1)
    cell = cfg.cell if periodic else None
    pairs, cells = both(cfg.positions, cell, 5.0)
    assert_same(pairs, cells)
    assert pair_set(pairs) == pair_set(cells)
    assert_same(pairs, neighbor_list(cfg.positions, cell, 5.0, reuse=False))  # 'auto'


@pytest.mark.parametrize('r_cut', [0.5, 3.0, 11.0])
def test_cluster(r_cut):
    """Non-periodic input (cell None), including a flat one and a cutoff beyond the cluster."""
    rng = np.random.default_rng(5)
    positions = rng.uniform(0, 10, (80, 3))
    assert_same(*both(positions, None, r_cut))
    positions[:, 2] = 1.0  # flat
    assert_same(*both(positions, None, r_cut))


def test_parallel_fill_is_deterministic(monkeypatch):
    """The parallel count and fill (bins in prange) give the serial result, whatever the thread count."""
    cfg = crn((3, 3, 2), amplitude=0.2, seed=7)
    serial = neighbor_list(cfg.positions, cfg.cell, 5.0, method='cells', reuse=False)
    monkeypatch.setattr(neighbors, 'PARALLEL_FROM', 1)
    threads = numba.get_num_threads()
    try:
        for n_threads in sorted({1, min(2, threads)}):
            numba.set_num_threads(n_threads)
            assert_same(serial, neighbor_list(cfg.positions, cfg.cell, 5.0, method='cells', reuse=False))
    finally:
        numba.set_num_threads(threads)


def test_kept_lists_are_copies():
    cfg = crn((2, 2, 2), seed=2)
    first = neighbor_list(cfg.positions, cfg.cell, 5.0)
    first[2][:] = 0.0  # the caller's copy only
    again = neighbor_list(cfg.positions.copy(), cfg.cell.copy(), 5.0)
    assert_same(neighbor_list(cfg.positions, cfg.cell, 5.0, reuse=False), again)
    moved = cfg.positions.copy()
    moved[0, 0] += 0.01
    assert_same(neighbor_list(moved, cfg.cell, 5.0, reuse=False), neighbor_list(moved, cfg.cell, 5.0))


def test_bad_method():
    with pytest.raises(ValueError, match='method'):
        neighbor_list(np.zeros((1, 3)), None, 1.0, method='fast')


@pytest.mark.parametrize(
    'cfg',
    [
        crn((1, 1, 1), amplitude=0.3, seed=4),
        crn((3, 2, 2), amplitude=0.3, seed=5),
        Configuration(np.array([[0.0, 0.0, 0.0], [2.075, 0.0, 0.0]]), np.array([0, 1]), PRIMITIVE_FCC),
        Configuration(np.array([[0.1, 0.2, 0.3]]), np.array([0]), PRIMITIVE_FCC),  # a lone atom: its images
        Configuration(np.random.default_rng(6).uniform(0, 9, (30, 3)), np.zeros(30, dtype=int)),  # cluster
        Configuration(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 7.5]]), np.array([0, 0])),  # a linear pair
    ],
    ids=['8 atoms', '48 atoms', 'primitive', 'lone atom', 'cluster', 'linear pair'],
)
def test_min_distance_matches_brute_force(cfg):
    assert min_distance(cfg) == pytest.approx(brute_min_distance(cfg), rel=1e-14)


def test_min_distance_of_one_free_atom_is_infinite():
    assert min_distance(Configuration(np.zeros((1, 3)), np.array([0]))) == float('inf')


def test_min_distance_4096_atoms_stays_small():
    """The former 2 x longest-vector cutoff allocated ~18 GB of pairs here; now a few MB."""
    cfg = crn((8, 8, 8), amplitude=0.1, seed=8)
    tracemalloc.start()
    try:
        d = min_distance(cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 1.0 < d < 2.075
    assert peak < 64e6  # bytes
