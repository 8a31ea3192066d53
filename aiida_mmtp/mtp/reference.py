"""An analytic magnetic pair potential: exact labels for synthetic tests and demos.

E = sum_i (a_z m_i^2 + b_z m_i^4)
  + 1/2 sum_{i != j} [ D_zz' ((1 - exp(-alpha (r - r0_zz')))^2 - 1) + J_zz' exp(-(r / r_J)^2) m_i m_j ] fc(r)

with fc(r) = (1 - r / r_cut)^2 for r < r_cut. Even in the moments (E(M) = E(-M)),
like the paper's symmetrised mMTP. Units: eV, Angstrom, mu_B. It plays the
role of DFT where a test needs exact labels fast; the default parameters
give a CrN-like B1 crystal with antiferromagnetic Cr-Cr exchange and Cr moments
near 2.4 mu_B.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .configuration import Configuration
from .evaluate import Result
from .neighbors import neighbor_list

__all__ = ['MagneticPairPotential']


def _pair_matrix(values) -> np.ndarray:
    return np.asarray(values, dtype=float).reshape(2, 2)


@dataclass
class MagneticPairPotential:
    """Parameters per species pair (2 x 2, type 0 = Cr-like, type 1 = N-like) and per species (2,)."""

    depth: np.ndarray = field(default_factory=lambda: _pair_matrix([[0.05, 1.1], [1.1, 0.05]]))  # eV
    r0: np.ndarray = field(default_factory=lambda: _pair_matrix([[3.3, 2.19], [2.19, 3.3]]))  # A
    alpha: float = 1.6  # 1/A
    exchange: np.ndarray = field(default_factory=lambda: _pair_matrix([[0.06, 0.01], [0.01, 0.0]]))  # eV/mu_B^2
    r_exchange: float = 3.2  # A
    landau_a: np.ndarray = field(default_factory=lambda: np.array([-0.4, 2.0]))  # eV/mu_B^2
    landau_b: np.ndarray = field(default_factory=lambda: np.array([0.035, 0.0]))  # eV/mu_B^4
    r_cut: float = 5.0
    #: The engine interface of a potential (what moment equilibration and the property calculations use).
    species: tuple[str, ...] = ('Cr', 'N')
    is_magnetic: bool = True
    r_min: float = 1.5  # A: below this the Morse wall is far outside any sensible structure
    mag_min: np.ndarray = field(default_factory=lambda: np.array([-3.2, -0.6]))  # mu_B
    mag_max: np.ndarray = field(default_factory=lambda: np.array([3.2, 0.6]))

    def evaluate(self, cfg: Configuration) -> Result:
        """Energy (eV), forces (eV/A), virial/stress and magnetic forces (eV/mu_B) of ``cfg``."""
        n = cfg.natoms
        m = np.zeros(n) if cfg.moments is None else np.asarray(cfg.moments, dtype=float)
        t = cfg.types
        offsets, nbr, vec = neighbor_list(cfg.positions, cfg.cell, self.r_cut)
        center = np.repeat(np.arange(n), np.diff(offsets))
        zi, zj = t[center], t[nbr]
        r = np.linalg.norm(vec, axis=1)
        u = vec / r[:, None]
        fc = (1 - r / self.r_cut) ** 2
        dfc = -2 * (1 - r / self.r_cut) / self.r_cut
        ex = np.exp(-self.alpha * (r - self.r0[zi, zj]))
        morse = self.depth[zi, zj] * ((1 - ex) ** 2 - 1)
        dmorse = self.depth[zi, zj] * 2 * (1 - ex) * self.alpha * ex
        gauss = np.exp(-((r / self.r_exchange) ** 2))
        jr = self.exchange[zi, zj] * gauss
        djr = jr * (-2 * r / self.r_exchange**2)
        mm = m[center] * m[nbr]
        pair_e = 0.5 * (morse + jr * mm) * fc
        dpair = 0.5 * ((dmorse + djr * mm) * fc + (morse + jr * mm) * dfc)  # d pair_e / dr
        site = self.landau_a[t] * m**2 + self.landau_b[t] * m**4
        np.add.at(site, center, pair_e)
        dvec = dpair[:, None] * u
        forces = np.zeros((n, 3))
        np.add.at(forces, center, dvec)
        np.subtract.at(forces, nbr, dvec)
        dedm = 2 * self.landau_a[t] * m + 4 * self.landau_b[t] * m**3
        np.add.at(dedm, center, jr * fc * m[nbr])
        full = -np.einsum('pa,pb->ab', dvec, vec)
        virial = np.array([full[0, 0], full[1, 1], full[2, 2], full[1, 2], full[0, 2], full[0, 1]])
        return Result.from_arrays(cfg, site, forces, virial, -dedm)

    def label(self, cfg: Configuration) -> Configuration:
        """A copy of ``cfg`` with exact energy, forces, virial and magnetic forces."""
        res = self.evaluate(cfg)
        out = res.to_configuration(cfg)
        if cfg.moments is None:
            out.mag_forces = None
        return out
