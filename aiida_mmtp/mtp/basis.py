"""Enumeration of the MTP basis from its level.

A basis function B_alpha is a full contraction of a product of moment tensors
M_{mu,nu} (rank nu, radial function mu) with level sum(2 + 4 mu + nu) <= lev.
We enumerate every contraction graph (nodes = tensors, edges = contracted
index pairs, no self-loops since u.u = 1 makes a trace redundant), expand it
into a polynomial of the components of the moment tensors ("basic moments"
sum_j f_mu(r_ij) u_x^a u_y^b u_z^c, u = r_ij / |r_ij|), and keep every
distinct polynomial from products of at most four tensors, lowest level
first. This is the rule behind MLIP's level templates: it gives their counts
level by level (and, like them, keeps the one linear dependency that appears
at level 16). The result is written in MLIP's table form:

- ``basic``: (n_basic, 4) int rows ``(mu, a, b, c)``;
- ``times``: (n_times, 4) rows ``(i, j, mult, k)``: moment[k] += mult *
  moment[i] * moment[j], evaluated in order;
- ``mapping``: (n_alpha,) indices of the moments that are basis functions.

The counts reproduce MLIP's level templates (level 6: 5 basis functions and
2 radial functions; level 16: 92 and 4).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

import numpy as np

__all__ = ['BasisTables', 'basis_for_level', 'tensor_level']

#: MLIP's templates contract products of at most this many moment tensors.
MAX_FACTORS = 4


@dataclass(frozen=True)
class BasisTables:
    """MLIP-style moment tables (see module docstring for the meaning)."""

    basic: np.ndarray  # (n_basic, 4) int64
    times: np.ndarray  # (n_times, 4) int64: i, j, mult, k
    mapping: np.ndarray  # (n_alpha,) int64
    n_moments: int

    @property
    def radial_funcs_count(self) -> int:
        return int(self.basic[:, 0].max()) + 1

    @property
    def n_alpha(self) -> int:
        return int(self.mapping.shape[0])


def tensor_level(mu: int, nu: int) -> int:
    """Level of the moment tensor M_{mu,nu}: 2 + 4 mu + nu."""
    return 2 + 4 * mu + nu


def _tensor_multisets(level: int):
    """All multisets of tensors (mu, nu), as sorted tuples, with total level <= level."""
    tensors = [(mu, nu) for mu in range(level) for nu in range(level) if tensor_level(mu, nu) <= level]
    tensors.sort()
    out = []

    def rec(start: int, chosen: list, lev: int):
        if chosen:
            out.append(tuple(chosen))
        for t in range(start, len(tensors)):
            lt = tensor_level(*tensors[t])
            if lev + lt <= level:
                chosen.append(tensors[t])
                rec(t, chosen, lev + lt)
                chosen.pop()

    rec(0, [], 0)
    return out


def _graphs(degrees: tuple[int, ...]):
    """Multigraphs without self-loops with the given degree sequence.

    Yields lists of edges (k, l) with k < l, parallel edges repeated.
    """
    n = len(degrees)
    pairs = [(k, l) for k in range(n) for l in range(k + 1, n)]

    def rec(p: int, remaining: list, edges: list):
        if p == len(pairs):
            if not any(remaining):
                yield list(edges)
            return
        k, l = pairs[p]
        # all edges of node k must be placed by the time its last pair is passed
        for e in range(min(remaining[k], remaining[l]) + 1):
            remaining[k] -= e
            remaining[l] -= e
            last_of_k = l == n - 1
            if not last_of_k or remaining[k] == 0:
                edges.extend([(k, l)] * e)
                yield from rec(p + 1, remaining, edges)
                del edges[len(edges) - e :]
            remaining[k] += e
            remaining[l] += e

    if n == 1:
        if degrees[0] == 0:
            yield []
        return
    yield from rec(0, list(degrees), [])


def _polynomial(tensors: tuple, edges: list) -> dict:
    """Expand a contraction into {sorted tuple of basic moments (mu,a,b,c): integer coefficient}."""
    poly: dict = {}
    for assign in itertools.product(range(3), repeat=len(edges)):
        powers = [[0, 0, 0] for _ in tensors]
        for (k, l), axis in zip(edges, assign):
            powers[k][axis] += 1
            powers[l][axis] += 1
        key = tuple(sorted((mu, *powers[t]) for t, (mu, _nu) in enumerate(tensors)))
        poly[key] = poly.get(key, 0) + 1
    return poly


def _basic_order(b: tuple) -> tuple:
    mu, a, bb, c = b
    return (mu, a + bb + c, -a, -bb, -c)


@cache
def basis_for_level(level: int) -> BasisTables:
    """Generate the moment tables of an MTP of the given level (2 <= level <= 28)."""
    if not 2 <= level <= 28:
        raise ValueError(f'MTP level must be between 2 and 28, got {level}')
    candidates = []  # (level, tensors, poly)
    seen = set()
    for tensors in _tensor_multisets(level):
        if len(tensors) > MAX_FACTORS:
            continue
        lev = sum(tensor_level(*t) for t in tensors)
        for edges in _graphs(tuple(nu for _mu, nu in tensors)):
            poly = _polynomial(tensors, edges)
            key = tuple(sorted(poly.items()))
            if key not in seen:
                seen.add(key)
                candidates.append((lev, len(tensors), tensors, poly))
    candidates.sort(key=lambda c: (c[0], c[1], c[2]))

    basic = sorted({b for c in candidates for mono in c[3] for b in mono}, key=_basic_order)
    index = {b: q for q, b in enumerate(basic)}
    # tables: prefix products are shared between basis functions
    n_moments = len(basic)
    times: list[tuple[int, int, int, int]] = []
    products: dict[tuple, int] = {}

    def product(mono: tuple) -> int:
        nonlocal n_moments
        if len(mono) == 1:
            return index[mono[0]]
        if mono not in products:
            left = product(mono[:-1])
            products[mono] = n_moments
            times.append((left, index[mono[-1]], 1, n_moments))
            n_moments += 1
        return products[mono]

    mapping = []
    for _lev, _k, _tensors, poly in candidates:
        monos = sorted(poly)
        if len(monos) == 1 and len(monos[0]) == 1 and poly[monos[0]] == 1:
            mapping.append(index[monos[0][0]])
            continue
        for mono in monos:
            if len(mono) > 1:
                product(mono[:-1])
        target = n_moments
        n_moments += 1
        for mono in monos:
            if len(mono) == 1:  # cannot happen for a contraction of several tensors
                raise AssertionError('unexpected linear term in a product basis function')
            times.append((product(mono[:-1]), index[mono[-1]], poly[mono], target))
        mapping.append(target)

    return BasisTables(
        basic=np.array(basic, dtype=np.int64).reshape(-1, 4),
        times=np.array(times, dtype=np.int64).reshape(-1, 4),
        mapping=np.array(mapping, dtype=np.int64),
        n_moments=n_moments,
    )
