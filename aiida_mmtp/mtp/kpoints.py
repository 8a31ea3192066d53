"""Which k-point set a Monkhorst-Pack mesh samples, and whether two labels sampled the same one.

A mesh ``n`` (3 integers) with shifts ``s`` (S, 3) in a cell ``L`` (rows, A)
samples the k-points ``(m + s) / n`` in the cell's reciprocal basis, for all
integer ``m``. Unfolded to the crystal, that set is the reciprocal lattice of
the Born-von Karman cell ``diag(n) L`` plus the offsets ``s`` (in the basis of
that reciprocal lattice). Two labels of one crystal are comparable only when
their sets are the same: the same Born-von Karman lattice (up to the small
homogeneous strains of a campaign) and the same offsets modulo that lattice.
An 8-atom cubic CrN cell at 2x2x2 and a 16-atom (2x1x1) one at 1x2x2, both
shifted by 1/2, sample one set; the 2-atom fcc cell at any diagonal mesh never
samples the set of a cubic cell (shared/docs/cdft.md: 1.67 eV/atom apart).
"""

from __future__ import annotations

import numpy as np

__all__ = ['kpoint_set_difference']

#: Largest departure of the Born-von Karman transformation from integers still taken as strain.
STRAIN_TOLERANCE = 0.15
#: Offsets that agree to this (fractions of the k-point spacing) are the same.
OFFSET_TOLERANCE = 1e-6


def _offsets(shifts) -> np.ndarray:
    out = np.asarray(shifts, dtype=float).reshape(-1, 3)
    return np.mod(out, 1.0)


def _same_offsets(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two sets of offsets (S, 3) coincide modulo 1, or modulo 1 after inversion (time reversal)."""

    def covered(x, y):
        return all(np.any(np.all(np.abs(((row - y) + 0.5) % 1.0 - 0.5) < OFFSET_TOLERANCE, axis=1)) for row in x)

    if len(a) != len(b):
        return False
    return (covered(a, b) and covered(b, a)) or (covered(np.mod(-a, 1.0), b) and covered(b, np.mod(-a, 1.0)))


def kpoint_set_difference(cell_a: np.ndarray, mesh_a, shifts_a, cell_b: np.ndarray, mesh_b, shifts_b) -> str | None:
    """Why two meshes sample different k-point sets, or None when they sample the same one.

    ``cell_*``: (3, 3) rows, A; ``mesh_*``: 3 integers; ``shifts_*``: (S, 3) in units of the mesh spacing.
    Cells may differ by a supercell and a homogeneous strain of a few percent.
    """
    mesh_a, mesh_b = np.asarray(mesh_a, dtype=int), np.asarray(mesh_b, dtype=int)
    bvk_a = np.diag(mesh_a).astype(float) @ np.asarray(cell_a, dtype=float)
    bvk_b = np.diag(mesh_b).astype(float) @ np.asarray(cell_b, dtype=float)
    transform = bvk_a @ np.linalg.inv(bvk_b)  # rows of bvk_a in the basis of bvk_b
    rounded = np.rint(transform)
    ratio = abs(np.linalg.det(bvk_a) / np.linalg.det(bvk_b))
    describe = f'mesh {"x".join(map(str, mesh_a))} of a {_size(cell_a)} cell and {"x".join(map(str, mesh_b))} of a '
    describe += f'{_size(cell_b)} cell'
    if np.max(np.abs(transform - rounded)) > STRAIN_TOLERANCE or round(abs(np.linalg.det(rounded))) != 1:
        return (f'{describe} sample different k-point lattices (k-point density ratio {ratio:.3g}, '
                'or lattices that are not supercells of one another)')  # fmt: skip
    # an offset s_a (reciprocal basis of bvk_a) in the reciprocal basis of bvk_b: s_a (R^-1)^T
    mapped = _offsets(shifts_a) @ np.linalg.inv(rounded).T
    if not _same_offsets(np.mod(mapped, 1.0), _offsets(shifts_b)):
        return f'{describe} sample the same k-point lattice with different shifts'
    return None


def _size(cell) -> str:
    lengths = np.linalg.norm(np.asarray(cell, dtype=float), axis=1)
    return '(' + ', '.join(f'{x:.3g}' for x in lengths) + ') A'
