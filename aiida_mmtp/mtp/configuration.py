"""A configuration: cell, atoms, collinear moments and (optional) labels.

Units: Angstrom, mu_B, eV, eV/Angstrom, eV/mu_B. Stress follows ASE
(``stress = -virial / volume``, Voigt order xx yy zz yz xz xy); the virial
(MLIP's ``PlusStress``, eV) is what we store, so files round-trip exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import units

__all__ = ['EV_PER_A3_IN_GPA', 'Configuration']

#: Stress and pressure: eV/A^3 -> GPa (ase.units), for reports; the engine computes in eV/A^3.
EV_PER_A3_IN_GPA = 1.0 / units.GPa


@dataclass
class Configuration:
    """One atomic configuration.

    Attributes (N atoms):
        positions: (N, 3) Cartesian, Angstrom.
        types: (N,) species indices of the potential.
        cell: (3, 3) lattice vectors as rows, Angstrom; None for a non-periodic cluster.
        moments: (N,) signed collinear moments, mu_B; None when not magnetic.
        energy: total energy, eV.
        forces: (N, 3) eV/Angstrom.
        virial: (6,) eV, Voigt xx yy zz yz xz xy (MLIP PlusStress).
        mag_forces: (N,) magnetic forces T = -dE/dm, eV/mu_B.
        grades: (N,) per-atom extrapolation grades (MLIP ``nbh_grades``).
        features: free-form key/value pairs (MLIP ``Feature``).
    """

    positions: np.ndarray
    types: np.ndarray
    cell: np.ndarray | None = None
    moments: np.ndarray | None = None
    energy: float | None = None
    forces: np.ndarray | None = None
    virial: np.ndarray | None = None
    mag_forces: np.ndarray | None = None
    grades: np.ndarray | None = None
    features: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=float).reshape(-1, 3)
        n = len(self.positions)
        self.types = np.asarray(self.types, dtype=np.int64).reshape(n)
        if self.cell is not None:
            self.cell = np.asarray(self.cell, dtype=float).reshape(3, 3)
        for name, shape in (('moments', (n,)), ('forces', (n, 3)), ('mag_forces', (n,)), ('grades', (n,))):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=float)
                if value.shape != shape:
                    raise ValueError(f'{name} has shape {value.shape}, expected {shape} for {n} atoms')
                setattr(self, name, value)
        if self.virial is not None:
            self.virial = np.asarray(self.virial, dtype=float).reshape(6)

    @property
    def natoms(self) -> int:
        return len(self.positions)

    @property
    def volume(self) -> float:
        if self.cell is None:
            raise ValueError('a non-periodic configuration has no volume')
        return float(abs(np.linalg.det(self.cell)))

    @property
    def stress(self) -> np.ndarray | None:
        """ASE stress, eV/Angstrom^3, Voigt xx yy zz yz xz xy (= -virial / volume)."""
        return None if self.virial is None else -self.virial / self.volume

    @stress.setter
    def stress(self, value: np.ndarray | None) -> None:
        self.virial = None if value is None else -np.asarray(value, dtype=float).reshape(6) * self.volume

    def copy(self) -> Configuration:
        kw = {}
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            kw[name] = v.copy() if isinstance(v, np.ndarray | dict) else v
        return Configuration(**kw)

    def clear_labels(self) -> Configuration:
        """A copy without energy, forces, virial and magnetic forces."""
        new = self.copy()
        new.energy = new.forces = new.virial = new.mag_forces = new.grades = None
        return new
