"""One fidelity per training set: which k-point set a label sampled, and which labels may join a set (hygiene).

- the k-point-set rule agrees with a brute-force enumeration of the k-points each mesh samples, folded into the
  crystal's primitive reciprocal cell (8-atom 2x2x2 shifted = 16-atom 1x2x2 shifted = 64-atom 1x1x1 shifted;
  the 2-atom cell's meshes never match the cubic cell's; shifted is not Gamma-centred);
- label hygiene refuses an exploded configuration, tens of eV/A, and the converged-but-wrong PAW + U
  all-zero state 60 eV/atom below the others, and accepts ordinary labels.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from aiida_mmtp.mtp.hygiene import HygieneRule, screen_labels
from aiida_mmtp.mtp.kpoints import kpoint_set_difference
from aiida_mmtp.mtp.reference import MagneticPairPotential
from aiida_mmtp.mtp.structures import random_collinear_moments, rattle, rocksalt, scaled, strained, supercell

A = 4.15
CUBIC = rocksalt(A).cell
PRIMITIVE = rocksalt(A, primitive=True).cell
HALF, GAMMA = [[0.5, 0.5, 0.5]], [[0.0, 0.0, 0.0]]


def folded_kpoints(cell, mesh, shifts) -> set:
    """Every k-point the mesh samples, unfolded to the crystal and folded into the primitive reciprocal cell.

    k = (m + s) / n in the reciprocal basis of ``cell``, plus every reciprocal vector of ``cell``; returned as
    fractional coordinates of the primitive reciprocal lattice, modulo 1, rounded.
    """
    recip = np.linalg.inv(cell).T  # rows b_i (2 pi left out on both sides)
    to_primitive = PRIMITIVE.T  # fractional coordinates of k in the primitive reciprocal basis: k . a_i
    size = int(round(abs(np.linalg.det(cell) / np.linalg.det(PRIMITIVE))))
    out = set()
    for s in shifts:
        for m in itertools.product(*(range(n) for n in mesh)):
            base = (np.array(m) + np.array(s)) / np.array(mesh)
            for g in itertools.product(range(size), repeat=3):
                frac = (base + np.array(g)) @ recip @ to_primitive
                for kp in (np.mod(frac, 1.0), np.mod(-frac, 1.0)):  # time reversal: k and -k are one point
                    out.add(tuple(np.round(np.mod(kp, 1.0), 6) % 1.0))
    return out


CASES = [
    (CUBIC, [2, 2, 2], HALF, np.diag([2.0, 1, 1]) @ CUBIC, [1, 2, 2], HALF, True),
    (CUBIC, [2, 2, 2], HALF, 2 * CUBIC, [1, 1, 1], HALF, True),
    (CUBIC, [4, 4, 4], GAMMA, 2 * CUBIC, [2, 2, 2], GAMMA, True),
    (CUBIC, [2, 2, 2], HALF, CUBIC, [2, 2, 2], GAMMA, False),  # shifted vs Gamma-centred
    (PRIMITIVE, [2, 2, 2], GAMMA, CUBIC, [1, 1, 1], GAMMA, False),  # the old `fast`: 1.67 eV/atom apart
    (PRIMITIVE, [4, 4, 4], GAMMA, CUBIC, [2, 2, 2], GAMMA, False),
    (CUBIC, [2, 2, 2], HALF, CUBIC, [3, 3, 3], HALF, False),
    (CUBIC, [2, 2, 2], HALF, np.diag([2.0, 1, 1]) @ CUBIC, [2, 2, 2], HALF, False),
]


@pytest.mark.parametrize(('cell_a', 'mesh_a', 'shift_a', 'cell_b', 'mesh_b', 'shift_b', 'same'), CASES)
def test_kpoint_set_rule_agrees_with_the_enumerated_kpoints(cell_a, mesh_a, shift_a, cell_b, mesh_b, shift_b, same):
    enumerated = folded_kpoints(cell_a, mesh_a, shift_a) == folded_kpoints(cell_b, mesh_b, shift_b)
    assert enumerated is same  # the test cases themselves are what they claim
    why = kpoint_set_difference(cell_a, mesh_a, shift_a, cell_b, mesh_b, shift_b)
    assert (why is None) is same, why
    assert (kpoint_set_difference(cell_b, mesh_b, shift_b, cell_a, mesh_a, shift_a) is None) is same  # symmetric


def test_kpoint_sets_follow_the_cell_through_scales_and_strains():
    cfg = rocksalt(A)
    for other in (scaled(cfg, 0.99), scaled(cfg, 1.012), strained(cfg, 'yz', 0.01), strained(cfg, 'xx', -0.01)):
        assert kpoint_set_difference(CUBIC, [2, 2, 2], HALF, other.cell, [2, 2, 2], HALF) is None
    why = kpoint_set_difference(PRIMITIVE, [2, 2, 2], GAMMA, CUBIC, [1, 1, 1], GAMMA)
    assert 'sample different k-point lattices (k-point density ratio 2' in why


def reference_labels(n: int, seed: int = 0) -> list:
    """Rattled B1 cells at 4.10-4.20 A with random 50/50 moments, labelled by the analytic reference."""
    ref, rng = MagneticPairPotential(), np.random.default_rng(seed)
    out = []
    for k in range(n):
        cfg = rattle(supercell(rocksalt(4.10 + 0.1 * k / max(n - 1, 1)), (1, 1, 1)), 0.08, rng)
        cfg.moments = random_collinear_moments(cfg.types, {0: 2.4}, rng)
        out.append(ref.label(cfg))
    return out


def test_hygiene_accepts_ordinary_labels():
    labels = reference_labels(10)
    assert screen_labels(labels[5:], labels[:5]) == [None] * 5
    assert screen_labels(labels, []) == [None] * 10  # the first labels of a campaign, among themselves


def test_hygiene_refuses_an_exploded_configuration_and_huge_forces():
    ref = MagneticPairPotential()
    labels = reference_labels(6)
    thrown = labels[0].copy()
    thrown.positions[1] = thrown.positions[0] + [0.9, 0.0, 0.0]  # a N atom 0.9 A from a Cr atom
    thrown = ref.label(thrown)
    hot = labels[1].copy()
    hot.forces = hot.forces.copy()
    hot.forces[3] = [0.0, 25.0, 0.0]
    problems = screen_labels([thrown, hot, labels[2]], labels[3:])
    assert problems[0] == 'atoms 0.90 A apart, closer than min_distance 1.5 A'
    assert problems[1] == 'a force of 25.0 eV/A, above max_force 15.0 eV/A'
    assert problems[2] is None


def test_hygiene_refuses_the_converged_but_wrong_all_zero_state():
    """PAW + U, all moments constrained to 0: exit 0, moments on target, 60 eV/atom below every other label."""
    labels = reference_labels(8)
    trap = labels[0].copy()
    trap.energy = labels[0].energy - 60.0 * trap.natoms
    problems = screen_labels([trap, labels[1]], labels[2:])
    assert re.fullmatch(
        r'energy -(59\.9\d|60\.0\d) eV/atom from the median of the set, beyond '
        r'max_energy_deviation 1\.0 eV/atom',
        problems[0],
    ), problems[0]
    assert problems[1] is None
    # caught as well among the first labels of a campaign, where there is no set yet to compare with
    assert [p is None for p in screen_labels([trap, *labels[1:]], [])] == [False] + [True] * 7
    # and per species: a N-rich cell is not an outlier for its composition
    rich = labels[2].copy()
    rich.types = rich.types.copy()
    rich.types[rich.types == 0] = 1
    rich.moments = np.zeros(rich.natoms)
    assert screen_labels([MagneticPairPotential().label(rich)], labels, HygieneRule(max_force=1e3)) == [None]


def test_hygiene_rule_from_a_protocol():
    assert HygieneRule.from_dict({'max_force': 20}) == HygieneRule(max_force=20.0)
    with pytest.raises(ValueError, match='hygiene: unknown keys max_forces'):
        HygieneRule.from_dict({'max_forces': 20})
    with pytest.raises(ValueError, match='hygiene: max_energy_deviation must be positive'):
        HygieneRule.from_dict({'max_energy_deviation': -1})
