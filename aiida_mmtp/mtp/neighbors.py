"""Neighbour lists with periodic images (any cell shape, cells smaller than 2 R_cut included)."""

from __future__ import annotations

import math

import numba as nb
import numpy as np

__all__ = ['neighbor_list']


@nb.njit(cache=True)
def _pairs(pos, frac, cell, recip_norm, periodic, r_cut, fill, offsets, nbr, vec):
    """Count (fill=False) or store (fill=True) all pairs i -> j + image with |r| <= r_cut."""
    n = pos.shape[0]
    r2cut = r_cut * r_cut
    p = 0
    for i in range(n):
        if fill:
            offsets[i] = p
        for j in range(n):
            if periodic:
                d0 = frac[j, 0] - frac[i, 0]
                d1 = frac[j, 1] - frac[i, 1]
                d2 = frac[j, 2] - frac[i, 2]
                lo0 = math.ceil(-r_cut * recip_norm[0] - d0)
                hi0 = math.floor(r_cut * recip_norm[0] - d0)
                lo1 = math.ceil(-r_cut * recip_norm[1] - d1)
                hi1 = math.floor(r_cut * recip_norm[1] - d1)
                lo2 = math.ceil(-r_cut * recip_norm[2] - d2)
                hi2 = math.floor(r_cut * recip_norm[2] - d2)
            else:
                d0 = d1 = d2 = 0.0
                lo0 = hi0 = lo1 = hi1 = lo2 = hi2 = 0
            for k0 in range(lo0, hi0 + 1):
                for k1 in range(lo1, hi1 + 1):
                    for k2 in range(lo2, hi2 + 1):
                        if i == j and k0 == 0 and k1 == 0 and k2 == 0:
                            continue
                        if periodic:
                            a0 = d0 + k0
                            a1 = d1 + k1
                            a2 = d2 + k2
                            x = a0 * cell[0, 0] + a1 * cell[1, 0] + a2 * cell[2, 0]
                            y = a0 * cell[0, 1] + a1 * cell[1, 1] + a2 * cell[2, 1]
                            z = a0 * cell[0, 2] + a1 * cell[1, 2] + a2 * cell[2, 2]
                        else:
                            x = pos[j, 0] - pos[i, 0]
                            y = pos[j, 1] - pos[i, 1]
                            z = pos[j, 2] - pos[i, 2]
                        r2 = x * x + y * y + z * z
                        if r2 <= r2cut:
                            if fill:
                                nbr[p] = j
                                vec[p, 0] = x
                                vec[p, 1] = y
                                vec[p, 2] = z
                            p += 1
    if fill:
        offsets[n] = p
    return p


def neighbor_list(positions: np.ndarray, cell: np.ndarray | None, r_cut: float):
    """All neighbours within ``r_cut`` (Angstrom), periodic images included.

    Returns ``(offsets, nbr, vec)``: neighbours of atom i are
    ``nbr[offsets[i]:offsets[i+1]]`` with vectors ``vec`` (P, 3) = r_j + image - r_i.
    Fractional coordinates are taken modulo 1 first, so atoms outside the cell are fine.
    """
    positions = np.ascontiguousarray(positions, dtype=float)
    n = positions.shape[0]
    periodic = cell is not None
    if periodic:
        cell = np.ascontiguousarray(cell, dtype=float)
        if abs(np.linalg.det(cell)) < 1e-12:
            raise ValueError('the cell is singular (zero volume)')
        inv = np.linalg.inv(cell)
        frac = positions @ inv
        frac -= np.floor(frac)
        recip_norm = np.linalg.norm(inv, axis=0)  # |b_a| = 1 / (spacing of lattice planes a)
    else:
        cell = np.eye(3)
        frac = positions
        recip_norm = np.zeros(3)
    offsets = np.zeros(n + 1, dtype=np.int64)
    dummy_i = np.zeros(0, dtype=np.int64)
    dummy_v = np.zeros((0, 3))
    count = _pairs(positions, frac, cell, recip_norm, periodic, r_cut, False, offsets, dummy_i, dummy_v)
    nbr = np.empty(count, dtype=np.int64)
    vec = np.empty((count, 3))
    _pairs(positions, frac, cell, recip_norm, periodic, r_cut, True, offsets, nbr, vec)
    return offsets, nbr, vec
