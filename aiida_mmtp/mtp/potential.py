"""The (magnetic) moment tensor potential: parameters, basis and bookkeeping.

Parameter vector theta (length ``n_params``), in MLIP's dE/dtheta order:

1. radial coefficients ``radial_coeffs[z_i, z_j, mu, beta, ii, jj]``
   (shape ``(S, S, n_mu, n_phi, n_psi, n_psi)``; ``ii`` indexes the magnetic
   basis of the central atom, ``jj`` the neighbour's);
2. species coefficients (eV, shape ``(S,)``);
3. moment coefficients xi_alpha (eV, shape ``(n_alpha,)``).

A non-magnetic potential is the case ``n_psi == 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .basis import BasisTables, basis_for_level

__all__ = ['Potential']


@dataclass
class Potential:
    """An mMTP (or plain MTP) potential.

    Lengths in Angstrom, moments in mu_B, coefficients so that energies are in eV.
    ``mag_min``/``mag_max`` (shape ``(S,)``) give the range (-M_max, M_max) on
    which the magnetic Chebyshev basis of each species is defined.
    ``symmetric`` selects the paper's energy (E(M) + E(-M)) / 2; ``False`` is
    MLIP-3's plain E(M).
    """

    species_count: int
    r_min: float
    r_cut: float
    n_phi: int
    tables: BasisTables
    radial_coeffs: np.ndarray
    species_coeffs: np.ndarray
    moment_coeffs: np.ndarray
    n_psi: int = 1
    mag_min: np.ndarray | None = None
    mag_max: np.ndarray | None = None
    scaling: float = 1.0
    species: tuple[str, ...] | None = None
    level: int | None = None
    symmetric: bool = False
    name: str = 'MTP1m'
    extra_tag: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        s, n_mu = self.species_count, self.tables.radial_funcs_count
        shape = (s, s, n_mu, self.n_phi, self.n_psi, self.n_psi)
        self.radial_coeffs = np.ascontiguousarray(self.radial_coeffs, dtype=float).reshape(shape)
        self.species_coeffs = np.ascontiguousarray(self.species_coeffs, dtype=float).reshape(s)
        self.moment_coeffs = np.ascontiguousarray(self.moment_coeffs, dtype=float).reshape(self.tables.n_alpha)
        if self.species is not None:
            self.species = tuple(self.species)
            if len(self.species) != s:
                raise ValueError(f'{len(self.species)} species names given for species_count = {s}')
        if self.n_psi < 1:
            raise ValueError(f'magnetic basis size must be >= 1, got {self.n_psi}')
        if self.is_magnetic:
            if self.mag_min is None or self.mag_max is None:
                raise ValueError('a magnetic potential (n_psi > 1) needs moment ranges mag_min/mag_max')
            self.mag_min = np.broadcast_to(np.asarray(self.mag_min, dtype=float), (s,)).copy()
            self.mag_max = np.broadcast_to(np.asarray(self.mag_max, dtype=float), (s,)).copy()
            if np.any(self.mag_max <= self.mag_min):
                raise ValueError(f'moment range must have max > min, got {self.mag_min} .. {self.mag_max}')
        else:
            self.mag_min = np.full(s, -1.0)
            self.mag_max = np.full(s, 1.0)
            self.symmetric = False
        if not 0 <= self.r_min < self.r_cut:
            raise ValueError(f'need 0 <= min_dist < max_dist, got {self.r_min} and {self.r_cut}')

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_level(
        cls,
        level: int,
        species: list[str] | tuple[str, ...],
        *,
        r_min: float = 1.7,
        r_cut: float = 5.0,
        n_phi: int = 8,
        n_psi: int = 1,
        m_max: float | list[float] | None = None,
        symmetric: bool | None = None,
        seed: int | None = 0,
        scale: float = 0.1,
    ) -> Potential:
        """A new potential of the given level with seeded random radial coefficients.

        ``m_max`` (mu_B): one value or one per species; the magnetic basis of a
        species spans (-m_max, m_max). ``symmetric`` defaults to True for
        magnetic potentials (the paper's energy).
        """
        tables = basis_for_level(level)
        s = len(species)
        rng = np.random.default_rng(seed)
        n_mu = tables.radial_funcs_count
        radial = rng.uniform(-scale, scale, size=(s, s, n_mu, n_phi, n_psi, n_psi))
        mag = None
        if n_psi > 1:
            if m_max is None:
                raise ValueError('a magnetic potential (n_psi > 1) needs m_max per species')
            mag = np.broadcast_to(np.asarray(m_max, dtype=float), (s,)).copy()
            if np.any(mag <= 0):
                raise ValueError(f'm_max must be positive, got {mag}')
        return cls(
            species_count=s,
            r_min=r_min,
            r_cut=r_cut,
            n_phi=n_phi,
            tables=tables,
            radial_coeffs=radial,
            species_coeffs=np.zeros(s),
            moment_coeffs=np.zeros(tables.n_alpha),
            n_psi=n_psi,
            mag_min=None if mag is None else -mag,
            mag_max=mag,
            species=tuple(species),
            level=level,
            symmetric=(n_psi > 1) if symmetric is None else symmetric,
        )

    # ------------------------------------------------------------------ parameters
    @property
    def is_magnetic(self) -> bool:
        return self.n_psi > 1

    @property
    def n_mu(self) -> int:
        return self.tables.radial_funcs_count

    @property
    def n_radial_params(self) -> int:
        return self.radial_coeffs.size

    @property
    def n_params(self) -> int:
        """Number of fitted parameters: radial + species + moment coefficients."""
        return self.radial_coeffs.size + self.species_count + self.tables.n_alpha

    def get_params(self) -> np.ndarray:
        """theta, shape (n_params,), in MLIP's order (see module docstring)."""
        return np.concatenate([self.radial_coeffs.ravel(), self.species_coeffs, self.moment_coeffs])

    def set_params(self, theta: np.ndarray) -> None:
        theta = np.asarray(theta, dtype=float)
        if theta.shape != (self.n_params,):
            raise ValueError(f'expected {self.n_params} parameters, got shape {theta.shape}')
        nr, s = self.radial_coeffs.size, self.species_count
        self.radial_coeffs = theta[:nr].reshape(self.radial_coeffs.shape).copy()
        self.species_coeffs = theta[nr : nr + s].copy()
        self.moment_coeffs = theta[nr + s :].copy()

    def copy(self) -> Potential:
        new = Potential(**{k: getattr(self, k) for k in self.__dataclass_fields__})
        new.set_params(self.get_params())
        new.extra_tag = dict(self.extra_tag)
        return new

    # ------------------------------------------------------------------ species
    def species_index(self, symbol: str) -> int:
        """Type index of a chemical symbol; a clear error for unknown species."""
        if self.species is None:
            raise ValueError('this potential does not name its species; give them explicitly')
        try:
            return self.species.index(symbol)
        except ValueError:
            raise ValueError(
                f"species '{symbol}' is not in this potential (species: {', '.join(self.species)})"
            ) from None

    def summary(self) -> dict:
        """Human-facing description (used by ``mmtp info``)."""
        return {
            'species': list(self.species) if self.species else None,
            'species_count': self.species_count,
            'level': self.level,
            'radial_basis_size': self.n_phi,
            'magnetic_basis_size': self.n_psi,
            'radial_funcs_count': self.n_mu,
            'basis_functions': self.tables.n_alpha,
            'basic_moments': int(self.tables.basic.shape[0]),
            'min_dist': self.r_min,
            'max_dist': self.r_cut,
            'moment_ranges': None
            if not self.is_magnetic
            else [[float(a), float(b)] for a, b in zip(self.mag_min, self.mag_max)],
            'energy_mode': 'symmetric' if self.symmetric else 'plain',
            'parameters': self.n_params,
        }
