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
from .kernels import loss_batch
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


def _run(pot: Potential, data: TrainingData, weights: Weights, need_grad: bool, n_threads: int | None):
    n_chunks = max(1, min(n_threads or nb.get_num_threads(), nb.get_num_threads(), len(data)))
    w = np.array([weights.energy, weights.forces, weights.stress, weights.mag_forces], dtype=float)
    symmetric = bool(pot.symmetric and pot.is_magnetic)
    return loss_batch(
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
