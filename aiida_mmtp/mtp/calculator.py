"""ASE calculator for (magnetic) moment tensor potentials."""

from __future__ import annotations

import os

from ase.calculators.calculator import Calculator, all_changes

from .ase_io import atoms_to_configuration
from .evaluate import Result, evaluate
from .mtp_io import read_mtp
from .potential import Potential

__all__ = ['MtpCalculator', 'ase_results']


def ase_results(res: Result) -> dict:
    """ASE calculator results from an evaluation (stress only for periodic cells)."""
    out = {
        'energy': res.energy,
        'free_energy': res.energy,
        'energies': res.site_energies,
        'forces': res.forces,
        'magnetic_forces': res.mag_forces,
    }
    if res.stress is not None:
        out['stress'] = res.stress
    return out


class MtpCalculator(Calculator):
    """Energy (eV), forces (eV/A), stress (eV/A^3, ASE convention) and magnetic forces (eV/mu_B).

    Moments come from ``atoms.get_initial_magnetic_moments()`` (collinear, mu_B).
    Results: ``energy``, ``free_energy``, ``energies`` (per atom), ``forces``,
    ``stress`` (periodic cells only) and ``magnetic_forces`` (T = -dE/dm).

    ``potential`` is a :class:`Potential` or a path to an ``.mtp`` file;
    ``species`` names the types when the potential does not;
    ``symmetric`` overrides the potential's energy mode.
    """

    implemented_properties = ['energy', 'free_energy', 'energies', 'forces', 'stress', 'magnetic_forces']

    def __init__(
        self,
        potential: Potential | str | os.PathLike,
        species: list[str] | None = None,
        symmetric: bool | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.potential = potential if isinstance(potential, Potential) else read_mtp(potential, species)
        if species is not None:
            self.potential.species = tuple(species)
        if self.potential.species is None:
            raise ValueError('the potential does not name its species: pass species=[...]')
        self.symmetric = symmetric

    def calculate(self, atoms=None, properties=('energy',), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        cfg = atoms_to_configuration(self.atoms, self.potential.species)
        if self.potential.is_magnetic and cfg.moments is None:
            raise ValueError('the potential is magnetic: set moments with atoms.set_initial_magnetic_moments()')
        self.results = ase_results(evaluate(self.potential, cfg, symmetric=self.symmetric))
