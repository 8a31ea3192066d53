"""D-optimality active learning: the B matrix, maxvol, the active set and extrapolation grades.

Row of B for configuration x: b(x) = dE/dtheta (x) / N_atoms at the current
parameters (dividing by N, as MLIP does, makes the grade of a replicated cell
equal to that of the cell). The active set A is the m x m submatrix of B with
(locally) maximal |det A|, found by maxvol (Goreinov et al.): with
c = b A^-1, replacing row j by b multiplies |det A| by |c_j|, so swaps are
made while max |c| > 1 + tol. The extrapolation grade is gamma(x) = max_j |c_j|.
When the training set has fewer rows than parameters, the missing rows are
unit rows (``fill`` on the diagonal).

Neighbourhood mode (MLIP-3's per-atom selection, ``neighborhoods=True``): the
rows are the site-energy gradients dV_i/dtheta of every atom, and a
configuration's grade is the largest grade of its atoms. One distorted site in
a large cell then counts fully instead of 1/N.
"""

from __future__ import annotations

import hashlib
import io
import os
import typing
from collections.abc import Sequence
from dataclasses import dataclass

import numba as nb
import numpy as np
import scipy.linalg

from .configuration import Configuration
from .evaluate import evaluate, site_gradients
from .potential import Potential

__all__ = ['ActiveSet', 'b_rows', 'grading_rows', 'maxvol', 'params_hash', 'site_rows']


def params_hash(pot: Potential) -> str:
    """A short fingerprint of the parameters (an active set belongs to one parameter vector)."""
    return hashlib.sha1(np.ascontiguousarray(pot.get_params()).tobytes()).hexdigest()[:16]


def b_rows(pot: Potential, configs: Sequence[Configuration], label: str = 'configuration') -> np.ndarray:
    """B matrix rows dE/dtheta / N, shape (len(configs), n_params)."""
    rows = np.empty((len(configs), pot.n_params))
    for k, cfg in enumerate(configs):
        rows[k] = evaluate(pot, cfg, gradient=True, label=f'{label} {k + 1}').grad / cfg.natoms
    return rows


def site_rows(
    pot: Potential, configs: Sequence[Configuration], label: str = 'configuration'
) -> tuple[np.ndarray, np.ndarray]:
    """Neighbourhood rows dV_i/dtheta of every atom of every configuration, shape (sum N_k, n_params), and the
    index of the configuration each row belongs to, shape (sum N_k,)."""
    blocks = [site_gradients(pot, cfg, label=f'{label} {k + 1}') for k, cfg in enumerate(configs)]
    if not blocks:
        return np.empty((0, pot.n_params)), np.empty(0, dtype=np.int64)
    owner = np.concatenate([np.full(len(b), k, dtype=np.int64) for k, b in enumerate(blocks)])
    return np.concatenate(blocks), owner


def _to_owners(source: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Active-set sources as configuration indices: row index r >= 0 becomes ``owner[r]``; -1 (unit rows) stays."""
    if not len(owner):  # no rows, so nothing entered
        return source
    return np.where(source >= 0, owner[np.maximum(source, 0)], source)


def grading_rows(
    pot: Potential, configs: Sequence[Configuration], neighborhoods: bool, label: str = 'configuration'
) -> tuple[np.ndarray, np.ndarray]:
    """Rows (K, n_params) and the configuration of each row (K,): :func:`b_rows` (one per configuration), or
    :func:`site_rows` (one per atom) with ``neighborhoods``."""
    if neighborhoods:
        return site_rows(pot, configs, label)
    return b_rows(pot, configs, label), np.arange(len(configs), dtype=np.int64)


@nb.njit(parallel=True, cache=True, error_model='numpy')
def _update_and_argmax(c, col, ci, mask, n_chunks):
    """C -= col (x) ci in place, and return the row and column of the largest |C| (one pass, in parallel).

    ``mask[j]`` False excludes column j from the search (it is still updated).
    """
    k_rows, m = c.shape
    chunk = (k_rows + n_chunks - 1) // n_chunks
    best = np.full(n_chunks, -1.0)
    where = np.zeros(n_chunks, dtype=np.int64)
    for t in nb.prange(n_chunks):
        for i in range(t * chunk, min(k_rows, (t + 1) * chunk)):
            f = col[i]
            for j in range(m):
                v = c[i, j] - f * ci[j]
                c[i, j] = v
                if mask[j] and abs(v) > best[t]:
                    best[t] = abs(v)
                    where[t] = i * m + j
    t = int(np.argmax(best))
    return where[t] // m, where[t] % m


def maxvol(
    rows: np.ndarray,
    a: np.ndarray,
    a_inv: np.ndarray,
    source: np.ndarray,
    *,
    tol: float = 1e-3,
    max_swaps: int | None = None,
    max_new: int | None = None,
) -> int:
    """Swap rows of ``rows`` (K, m) into the active set (A, A^-1, source) while that grows |det A|.

    ``source[j]`` is the index in ``rows`` of active row j, or -1 for a row not
    from ``rows``. Arrays are updated in place (rank-one updates of A^-1 and of
    C = rows A^-1). ``max_new`` caps how many distinct rows of ``rows`` may sit
    in A at the end. Returns the number of swaps.
    """
    k_rows, m = rows.shape
    if k_rows == 0:
        return 0
    c = rows @ a_inv
    swaps = 0
    limit = max_swaps if max_swaps is not None else 10 * m + k_rows
    everywhere = np.ones(m, dtype=np.bool_)
    threads = nb.get_num_threads()
    zero_col, zero_ci = np.zeros(k_rows), np.zeros(m)
    i, j = _update_and_argmax(c, zero_col, zero_ci, everywhere, threads)
    while swaps < limit:
        capped = max_new is not None and np.count_nonzero(source >= 0) >= max_new
        if capped:
            # at the cap: a row of ``rows`` may only replace another one of them
            mask = source >= 0
            if not mask.any():
                break
            i, j = _update_and_argmax(c, zero_col, zero_ci, mask, threads)
        cij = c[i, j]
        if abs(cij) <= 1.0 + tol:
            break
        # A^-1 <- A^-1 - A^-1[:, j] (c_i - e_j) / c_ij ;  C <- C - C[:, j] (c_i - e_j) / c_ij
        ci = c[i].copy()
        ci[j] -= 1.0
        ci /= cij
        a_inv -= np.outer(a_inv[:, j], ci)
        a[j] = rows[i]
        source[j] = i
        swaps += 1
        i, j = _update_and_argmax(c, c[:, j].copy(), ci, everywhere, threads)
    return swaps


def _lu_pivot_rows(rows: np.ndarray) -> np.ndarray:
    """The m rows that LU with partial pivoting picks first: a good start for maxvol."""
    _, piv, _ = scipy.linalg.lapack.dgetrf(rows.copy())
    perm = np.arange(rows.shape[0])
    for k, p in enumerate(piv):
        perm[k], perm[p] = perm[p], perm[k]
    return perm[: rows.shape[1]]


@dataclass
class ActiveSet:
    """The m x m active set of a potential.

    a: (m, m) rows; a_inv: its inverse; source: (m,) index of the training
    configuration of each row (-1: a unit fill row); potential: fingerprint
    of the parameters it was built for; neighborhoods: rows are per-atom
    (dV_i/dtheta) instead of per-configuration (dE/dtheta / N).
    """

    a: np.ndarray
    a_inv: np.ndarray
    source: np.ndarray
    potential: str
    neighborhoods: bool = False

    @classmethod
    def build(
        cls,
        pot: Potential,
        training: Sequence[Configuration],
        *,
        fill: float = 1.0,
        tol: float = 1e-3,
        neighborhoods: bool = False,
    ) -> ActiveSet:
        """Active set from a training set (unit rows ``fill`` * I where K < m); per-atom rows with
        ``neighborhoods``."""
        m = pot.n_params
        rows, owner = grading_rows(pot, training, neighborhoods, 'training configuration')
        a, a_inv, source = fill * np.eye(m), np.eye(m) / fill, np.full(m, -1, dtype=np.int64)
        if len(rows) >= m:  # start from the rows LU pivoting picks, unless they are singular
            start = _lu_pivot_rows(rows)
            try:
                a_inv = np.linalg.inv(rows[start])
                a, source = rows[start].copy(), start.astype(np.int64)
            except np.linalg.LinAlgError:
                pass
        maxvol(rows, a, a_inv, source, tol=tol)
        source = _to_owners(source, owner)
        return cls(a=a, a_inv=a_inv, source=source, potential=params_hash(pot), neighborhoods=neighborhoods)

    def rows(
        self, pot: Potential, configs: Sequence[Configuration], label: str = 'configuration'
    ) -> tuple[np.ndarray, np.ndarray]:
        """The rows this active set grades ``configs`` by, shape (K, m), and the configuration of each row (K,):
        one row per configuration (dE/dtheta / N), or one per atom (dV_i/dtheta) in neighbourhood mode."""
        return grading_rows(pot, configs, self.neighborhoods, label)

    def config_grades(self, pot: Potential, configs: Sequence[Configuration], label: str = 'configuration'):
        """gamma of each configuration, shape (len(configs),): the largest grade of its rows."""
        rows, owner = self.rows(pot, configs, label)
        out = np.zeros(len(configs))
        if len(rows):
            np.maximum.at(out, owner, self.grades(rows))
        return out

    def check(self, pot: Potential) -> None:
        if self.a.shape != (pot.n_params, pot.n_params):
            raise ValueError(
                f'the active set is {self.a.shape[0]} x {self.a.shape[1]}, the potential has {pot.n_params} parameters'
            )
        if self.potential != params_hash(pot):
            raise ValueError(
                'the active set was built for other parameters of this potential: rebuild it after fitting'
            )

    def grades(self, rows: np.ndarray) -> np.ndarray:
        """gamma for each row of ``rows`` (K, m): max_j |rows A^-1|_j."""
        return np.abs(np.atleast_2d(rows) @ self.a_inv).max(axis=1)

    def grade(self, pot: Potential, cfg: Configuration) -> float:
        return float(self.config_grades(pot, [cfg])[0])

    def select(
        self, rows: np.ndarray, *, owner: np.ndarray | None = None, max_new: int | None = None, tol: float = 1e-3
    ) -> tuple[ActiveSet, np.ndarray]:
        """Update with candidate rows; return (new active set, sorted indices of candidates that entered A).

        ``owner`` (K,): the candidate configuration of each row (default: row k is candidate k; see :meth:`rows`).
        ``max_new`` caps the rows that enter. The source of the new set's rows: training rows keep their index,
        entered candidates are marked -2 - candidate index.
        """
        owner = np.arange(len(rows), dtype=np.int64) if owner is None else np.asarray(owner, dtype=np.int64)
        a, a_inv = self.a.copy(), self.a_inv.copy()
        source = np.full(len(self.source), -1, dtype=np.int64)
        maxvol(rows, a, a_inv, source, tol=tol, max_new=max_new)
        source = _to_owners(source, owner)
        chosen = np.unique(source[source >= 0])
        merged = np.where(source >= 0, -2 - source, self.source)
        return ActiveSet(a=a, a_inv=a_inv, source=merged, potential=self.potential,
                         neighborhoods=self.neighborhoods), chosen  # fmt: skip

    # ------------------------------------------------------------------ files
    def to_bytes(self) -> bytes:
        """The file content (NumPy .npz): A, the rows' sources, the parameters' fingerprint and the row mode. A^-1 is
        not stored (half the bytes: 2.9 MB at 606 parameters); :meth:`load` inverts A again."""
        buffer = io.BytesIO()
        np.savez(buffer, a=self.a, source=self.source, potential=np.array(self.potential),
                 neighborhoods=np.array(self.neighborhoods))  # fmt: skip
        return buffer.getvalue()

    def save(self, path: str | os.PathLike) -> None:
        """Write to ``path`` (NumPy .npz content, whatever the file name), atomically."""
        from .atomic import atomic_output

        with atomic_output(path, 'wb') as handle:
            handle.write(self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike | typing.BinaryIO) -> ActiveSet:
        """Read a file written by :meth:`save` (a path or a binary file object); A^-1 is A inverted (files written
        before A^-1 was left out hold it, and it is read)."""
        try:
            with np.load(path) as data:
                per_atom = bool(data['neighborhoods']) if 'neighborhoods' in data else False  # files before the mode
                a = data['a']
                a_inv = data['a_inv'] if 'a_inv' in data else np.linalg.inv(a)
                return cls(a=a, a_inv=a_inv, source=data['source'], potential=str(data['potential']),
                           neighborhoods=per_atom)  # fmt: skip
        except (OSError, KeyError, ValueError, np.linalg.LinAlgError) as exc:
            raise ValueError(f'{path}: not an active-set file ({exc})') from None
