"""Evaluate a potential on a configuration: energy, forces, stress, magnetic forces, dE/dtheta."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .configuration import Configuration
from .kernels import evaluate_atoms
from .neighbors import neighbor_list
from .potential import Potential

__all__ = ['Result', 'check_configuration', 'evaluate', 'prepare', 'site_gradients']


@dataclass
class Result:
    """What one evaluation gives (N atoms, P parameters).

    energy: eV; site_energies: (N,) eV; forces: (N, 3) eV/A;
    virial: (6,) eV, Voigt xx yy zz yz xz xy (MLIP PlusStress);
    stress: (6,) eV/A^3, ASE convention (None for a non-periodic configuration);
    forces, virial and stress are None for an evaluation without them (``evaluate(..., forces=False)``);
    mag_forces: (N,) T = -dE/dm, eV/mu_B (zeros for a non-magnetic potential);
    grad: (P,) dE/dtheta in the potential's parameter order, or None.
    """

    energy: float
    site_energies: np.ndarray
    forces: np.ndarray | None
    virial: np.ndarray | None
    stress: np.ndarray | None
    mag_forces: np.ndarray
    grad: np.ndarray | None = None

    @classmethod
    def from_arrays(cls, cfg, site_energies, forces, virial, mag_forces, grad=None) -> Result:
        """A result for ``cfg``; energy is the sum of the site energies, stress follows from the virial."""
        return cls(
            energy=float(np.sum(site_energies)),
            site_energies=site_energies,
            forces=forces,
            virial=virial,
            stress=-virial / cfg.volume if cfg.cell is not None and virial is not None else None,
            mag_forces=mag_forces,
            grad=grad,
        )

    def to_configuration(self, cfg: Configuration) -> Configuration:
        """A copy of ``cfg`` labelled with these results."""
        out = cfg.copy()
        out.energy = self.energy
        out.forces = self.forces.copy() if self.forces is not None else None
        out.virial = self.virial.copy() if cfg.cell is not None and self.virial is not None else None
        out.mag_forces = self.mag_forces.copy() if cfg.moments is not None else None
        return out


def check_configuration(pot: Potential, cfg: Configuration, label: str = 'configuration') -> np.ndarray:
    """Check ``cfg`` can be evaluated by ``pot``; return the moments to use (N,).

    Raises ValueError naming the atom for unknown species, non-finite
    positions or moments, missing moments for a magnetic potential, and atoms
    closer than R_min / 2.
    """
    n = cfg.natoms
    if n == 0:
        raise ValueError(f'{label} has no atoms')
    bad = np.flatnonzero((cfg.types < 0) | (cfg.types >= pot.species_count))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f'{label}: atom {i + 1} has species type {int(cfg.types[i])}, '
            f'but the potential has {pot.species_count} species (types 0..{pot.species_count - 1})'
        )
    bad = np.flatnonzero(~np.all(np.isfinite(cfg.positions), axis=1))
    if bad.size:
        raise ValueError(f'{label}: atom {int(bad[0]) + 1} has a non-finite position {cfg.positions[bad[0]].tolist()}')
    if cfg.cell is not None and not np.all(np.isfinite(cfg.cell)):
        raise ValueError(f'{label}: the cell has non-finite entries')
    if pot.is_magnetic:
        if cfg.moments is None:
            raise ValueError(f'{label} has no magnetic moments, but the potential is magnetic')
        bad = np.flatnonzero(~np.isfinite(cfg.moments))
        if bad.size:
            raise ValueError(f'{label}: atom {int(bad[0]) + 1} has a non-finite magnetic moment')
        return np.ascontiguousarray(cfg.moments, dtype=float)
    return np.zeros(n)


def _closest_pair_check(pot, label, offsets, nbr, vec):
    if vec.shape[0] == 0:
        return
    r = np.sqrt(np.einsum('ij,ij->i', vec, vec))
    p = int(np.argmin(r))
    if r[p] < 0.5 * pot.r_min:
        i = int(np.searchsorted(offsets, p, side='right') - 1)
        raise ValueError(
            f'{label}: atoms {i + 1} and {int(nbr[p]) + 1} are {r[p]:.4f} A apart, '
            f'closer than half the potential min_dist ({pot.r_min} A)'
        )


def prepare(pot: Potential, cfg: Configuration, label: str = 'configuration'):
    """Validate ``cfg`` for ``pot`` and build its neighbour list.

    Returns ``(moments (N,), (offsets, nbr, vec))``; raises ValueError naming the
    atom (see :func:`check_configuration`, and atoms closer than R_min / 2).
    """
    moments = check_configuration(pot, cfg, label)
    neigh = neighbor_list(cfg.positions, cfg.cell, pot.r_cut)
    _closest_pair_check(pot, label, *neigh)
    return moments, neigh


def _raw(pot, types, moments, neigh, gradient, n_chunks, forces=True):
    offsets, nbr, vec = neigh
    return evaluate_atoms(
        n_chunks, types, moments, offsets, nbr, vec,
        pot.radial_coeffs, pot.species_coeffs, pot.moment_coeffs,
        pot.tables.basic, pot.tables.times, pot.tables.mapping, pot.tables.n_moments,
        pot.r_min, pot.r_cut, pot.scaling, pot.mag_min, pot.mag_max,
        gradient, pot.n_params, forces,
    )  # fmt: skip


def evaluate(
    pot: Potential,
    cfg: Configuration,
    *,
    gradient: bool = False,
    forces: bool = True,
    symmetric: bool | None = None,
    n_threads: int | None = None,
    label: str = 'configuration',
) -> Result:
    """Energy and derivatives of ``cfg`` under ``pot``.

    ``symmetric`` (default: the potential's mode) gives the paper's
    (E(M) + E(-M)) / 2 with every derived quantity consistent with it;
    ``False`` gives MLIP-3's plain E(M). ``gradient`` adds dE/dtheta.
    ``forces=False`` skips every derivative along the positions (forces, virial and stress are None): energy and
    magnetic forces of the same values, for moment equilibration at fixed atoms, at about 4/5 of the cost.
    ``n_threads`` caps the numba threads used (default: all).
    """
    moments, neigh = prepare(pot, cfg, label)
    types = np.ascontiguousarray(cfg.types, dtype=np.int64)
    n_chunks = min(n_threads or numba.get_num_threads(), numba.get_num_threads(), cfg.natoms)
    symmetric = pot.symmetric if symmetric is None else symmetric
    with_forces = forces
    site, forces, virial, dedm, grad, _ = _raw(pot, types, moments, neigh, gradient, n_chunks, with_forces)
    if symmetric and pot.is_magnetic:
        site2, forces2, virial2, dedm2, grad2, _ = _raw(pot, types, -moments, neigh, gradient, n_chunks, with_forces)
        site = 0.5 * (site + site2)
        forces = 0.5 * (forces + forces2)
        virial = 0.5 * (virial + virial2)
        dedm = 0.5 * (dedm - dedm2)
        grad = 0.5 * (grad + grad2)
    mag_forces = -dedm if pot.is_magnetic else np.zeros(cfg.natoms)
    if not with_forces:
        forces = virial = None
    return Result.from_arrays(cfg, site, forces, virial, mag_forces, grad if gradient else None)


def site_gradients(pot: Potential, cfg: Configuration, *, label: str = 'configuration') -> np.ndarray:
    """dV_i/dtheta of every atom's site energy, shape (N, n_params), in the potential's energy mode (symmetric:
    the mean over M and -M); their sum over atoms is :func:`evaluate`'s ``grad``. MLIP-3's neighbourhood rows."""
    moments, neigh = prepare(pot, cfg, label)
    types = np.ascontiguousarray(cfg.types, dtype=np.int64)
    rows = _raw(pot, types, moments, neigh, True, cfg.natoms)[5]
    if pot.symmetric and pot.is_magnetic:
        rows = 0.5 * (rows + _raw(pot, types, -moments, neigh, True, cfg.natoms)[5])
    return rows
