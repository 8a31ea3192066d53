"""The fitting objective of the paper and its exact gradient, batched over configurations.

L(theta) = (1/K) sum_k [ w_e (E_k - E_k^ref)^2 + w_f sum_i |F_ik - F_ik^ref|^2
                         + w_s sum_ab (W_abk - W_abk^ref)^2 + w_t sum_i (T_ik - T_ik^ref)^2 ]

with energies E in eV, forces F in eV/A, W the virial (MLIP's PlusStress, eV,
summed over all nine components) and magnetic forces T in eV/mu_B. Terms a
configuration has no label for are left out.

The gradient of the force, virial and magnetic-force terms is -2 d/dtheta of
the directional derivative of E along (w_f dF, w_s dW, w_t dT), which the
kernel's tangent sweep gives exactly; a loss + gradient costs about three
energy-force evaluations, not a Jacobian of all forces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba as nb
import numpy as np

from .configuration import Configuration
from .evaluate import prepare
from .kernels import _JIT, scatter, site_block
from .potential import Potential

__all__ = ['Weights', 'TrainingData', 'loss_and_gradient', 'predict']


@dataclass(frozen=True)
class Weights:
    """Loss weights (paper defaults): w_e 1, w_f 0.01 A^2, w_s 0.001, w_t 0.1 mu_B^2."""

    energy: float = 1.0
    forces: float = 0.01
    stress: float = 0.001
    mag_forces: float = 0.1


class TrainingData:
    """Configurations packed into flat arrays (neighbour lists built once, for a given R_cut)."""

    def __init__(self, configs: Sequence[Configuration], pot: Potential) -> None:
        if not configs:
            raise ValueError('no configurations given')
        self.configs = list(configs)
        k = len(configs)
        natoms = np.array([c.natoms for c in configs])
        self.atom_start = np.concatenate([[0], np.cumsum(natoms)]).astype(np.int64)
        n = int(self.atom_start[-1])
        types, moments, offsets, nbrs, vecs = [], [], [np.zeros(1, dtype=np.int64)], [], []
        n_pairs = 0
        self.e_ref = np.zeros(k)
        self.has = np.zeros((k, 4), dtype=np.bool_)  # energy, forces, virial, magnetic forces
        self.f_ref = np.zeros((n, 3))
        self.w_ref = np.zeros((k, 6))
        self.t_ref = np.zeros(n)
        for c, cfg in enumerate(configs):
            m, (off, nbr, vec) = prepare(pot, cfg, f'training configuration {c + 1}')
            a0 = self.atom_start[c]
            types.append(cfg.types)
            moments.append(m)
            offsets.append(off[1:] + n_pairs)
            nbrs.append(nbr + a0)
            vecs.append(vec)
            n_pairs += len(nbr)
            sl = slice(a0, self.atom_start[c + 1])
            if cfg.energy is not None:
                self.e_ref[c], self.has[c, 0] = cfg.energy, True
            if cfg.forces is not None:
                self.f_ref[sl], self.has[c, 1] = cfg.forces, True
            if cfg.virial is not None and cfg.cell is not None:
                self.w_ref[c], self.has[c, 2] = cfg.virial, True
            if cfg.mag_forces is not None and pot.is_magnetic:
                self.t_ref[sl], self.has[c, 3] = cfg.mag_forces, True
        self.types = np.concatenate(types).astype(np.int64)
        self.moments = np.concatenate(moments)
        self.offsets = np.concatenate(offsets).astype(np.int64)
        self.nbr = np.concatenate(nbrs).astype(np.int64)
        self.vec = np.concatenate(vecs) if vecs else np.zeros((0, 3))
        self.natoms = natoms

    def __len__(self) -> int:
        return len(self.configs)


@nb.njit(**_JIT)
def _evaluate_config(
    a0, a1, types, moments, offsets, nbr, vec, rc, sc, xi, basic, times, mapping, n_moments,
    r_min, r_cut, scaling, mag_min, mag_max, need_grad, site_e, pair_dvec, pair_dm, own_dm, g,
    tangent, dvec, dm, gt,
):  # fmt: skip
    # a tangent sweep is run for gt alone: no forces (the sweep skips dV/dvec), nothing scattered
    site_block(
        a0, a1, types, moments, offsets, nbr, vec, rc, sc, xi, basic, times, mapping, n_moments,
        r_min, r_cut, scaling, mag_min, mag_max, need_grad, not tangent, site_e, pair_dvec, pair_dm, own_dm, g,
        tangent, dvec, dm, gt,
    )  # fmt: skip
    if tangent:
        return 0.0, np.zeros((0, 3)), np.zeros(6), np.zeros(0)
    forces, virial, dedm = scatter(a0, a1, offsets, nbr, vec, pair_dvec, pair_dm, own_dm)
    return site_e[a0:a1].sum(), forces, virial, dedm


@nb.njit(parallel=True, **_JIT)
def _loss_batch(
    n_chunks, atom_start, types, moments, offsets, nbr, vec,
    rc, sc, xi, basic, times, mapping, n_moments, r_min, r_cut, scaling, mag_min, mag_max,
    symmetric, need_grad, n_params,
    e_ref, has, f_ref, w_ref, t_ref, weights,
):  # fmt: skip
    k_cfg = atom_start.shape[0] - 1
    n = types.shape[0]
    n_pairs = nbr.shape[0]
    terms = np.zeros((k_cfg, 4))
    e_pred = np.zeros(k_cfg)
    f_pred = np.zeros((n, 3))
    w_pred = np.zeros((k_cfg, 6))
    t_pred = np.zeros(n)
    grads = np.zeros((n_chunks, n_params if need_grad else 0))
    site_e = np.zeros(n)
    pair_dvec = np.zeros((n_pairs, 3))
    pair_dm = np.zeros(n_pairs)
    own_dm = np.zeros(n)
    dvec = np.zeros((n_pairs if need_grad else 0, 3))
    dm = np.zeros(n if need_grad else 0)
    neg = -moments
    n_runs = 2 if symmetric else 1
    chunk = (k_cfg + n_chunks - 1) // n_chunks
    we, wf, ws, wt = weights[0], weights[1], weights[2], weights[3]
    for c in nb.prange(n_chunks):
        gsum = np.zeros(n_params if need_grad else 0)
        g = np.zeros(n_params if need_grad else 0)
        gt = np.zeros(n_params if need_grad else 0)
        for k in range(c * chunk, min(k_cfg, (c + 1) * chunk)):
            a0 = atom_start[k]
            a1 = atom_start[k + 1]
            na = a1 - a0
            g[:] = 0.0
            energy = 0.0
            forces = np.zeros((na, 3))
            virial = np.zeros(6)
            dedm = np.zeros(na)
            for run in range(n_runs):
                mm = moments if run == 0 else neg
                e1, f1, v1, d1 = _evaluate_config(
                    a0, a1, types, mm, offsets, nbr, vec, rc, sc, xi, basic, times, mapping, n_moments,
                    r_min, r_cut, scaling, mag_min, mag_max, need_grad, site_e, pair_dvec, pair_dm, own_dm, g,
                    False, dvec, dm, gt,
                )  # fmt: skip
                sign = 1.0 if run == 0 else -1.0
                energy += e1 / n_runs
                forces += f1 / n_runs
                virial += v1 / n_runs
                dedm += sign * d1 / n_runs
            if need_grad:
                g /= n_runs
            # residuals and loss terms
            de = energy - e_ref[k] if has[k, 0] else 0.0
            e_pred[k] = energy
            w_pred[k] = virial
            terms[k, 0] = we * de * de
            dw = np.zeros((3, 3))
            if has[k, 2]:
                for v in range(6):
                    a = (0, 1, 2, 1, 0, 0)[v]
                    b = (0, 1, 2, 2, 2, 1)[v]
                    dw[a, b] = virial[v] - w_ref[k, v]
                    dw[b, a] = dw[a, b]
                terms[k, 2] = ws * np.sum(dw * dw)
            for i in range(na):
                f_pred[a0 + i] = forces[i]
                t_pred[a0 + i] = -dedm[i]
                if has[k, 1]:
                    for x in range(3):
                        d = forces[i, x] - f_ref[a0 + i, x]
                        terms[k, 1] += wf * d * d
                if has[k, 3]:
                    d = -dedm[i] - t_ref[a0 + i]
                    terms[k, 3] += wt * d * d
            if not need_grad:
                continue
            for x in range(n_params):
                gsum[x] += 2.0 * we * de * g[x]
            if not (has[k, 1] or has[k, 2] or has[k, 3]):
                continue
            # tangent: positions + t w_f dF, strain t w_s dW, moments + t w_t dT
            for i in range(a0, a1):
                dm[i] = wt * (-dedm[i - a0] - t_ref[i]) if has[k, 3] else 0.0
                for p in range(offsets[i], offsets[i + 1]):
                    j = nbr[p]
                    for x in range(3):
                        d = 0.0
                        if has[k, 1]:
                            d += wf * ((forces[j - a0, x] - f_ref[j, x]) - (forces[i - a0, x] - f_ref[i, x]))
                        if has[k, 2]:
                            d += ws * (dw[x, 0] * vec[p, 0] + dw[x, 1] * vec[p, 1] + dw[x, 2] * vec[p, 2])
                        dvec[p, x] = d
            gt[:] = 0.0
            for run in range(n_runs):
                if run == 1:
                    for i in range(a0, a1):
                        dm[i] = -dm[i]
                mm = moments if run == 0 else neg
                _evaluate_config(
                    a0, a1, types, mm, offsets, nbr, vec, rc, sc, xi, basic, times, mapping, n_moments,
                    r_min, r_cut, scaling, mag_min, mag_max, True, site_e, pair_dvec, pair_dm, own_dm, g,
                    True, dvec, dm, gt,
                )  # fmt: skip
            for x in range(n_params):
                gsum[x] -= 2.0 * gt[x] / n_runs
        grads[c] = gsum
    grad = np.zeros(n_params if need_grad else 0)
    for c in range(n_chunks):
        grad += grads[c]
    return terms, grad, e_pred, f_pred, w_pred, t_pred


def _run(pot: Potential, data: TrainingData, weights: Weights, need_grad: bool, n_threads: int | None):
    n_chunks = max(1, min(n_threads or nb.get_num_threads(), nb.get_num_threads(), len(data)))
    w = np.array([weights.energy, weights.forces, weights.stress, weights.mag_forces], dtype=float)
    symmetric = bool(pot.symmetric and pot.is_magnetic)
    return _loss_batch(
        n_chunks, data.atom_start, data.types, data.moments, data.offsets, data.nbr, data.vec,
        pot.radial_coeffs, pot.species_coeffs, pot.moment_coeffs, pot.tables.basic, pot.tables.times,
        pot.tables.mapping, pot.tables.n_moments, pot.r_min, pot.r_cut, pot.scaling, pot.mag_min, pot.mag_max,
        symmetric, need_grad, pot.n_params, data.e_ref, data.has, data.f_ref, data.w_ref, data.t_ref, w,
    )  # fmt: skip


def loss_and_gradient(
    pot: Potential, data: TrainingData, weights: Weights = Weights(), n_threads: int | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """(loss, dloss/dtheta (n_params,), loss per term (4,): energy, forces, stress, magnetic forces)."""
    terms, grad, *_ = _run(pot, data, weights, True, n_threads)
    k = len(data)
    return float(terms.sum() / k), grad / k, terms.sum(axis=0) / k


def predict(pot: Potential, data: TrainingData, n_threads: int | None = None) -> dict[str, np.ndarray]:
    """Energies (K,), forces (N, 3), virials (K, 6) and magnetic forces (N,) of every configuration."""
    _, _, e, f, w, t = _run(pot, data, Weights(), False, n_threads)
    return {'energy': e, 'forces': f, 'virial': w, 'mag_forces': t}
