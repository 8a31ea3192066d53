"""Phonons of a magnetic phase with phonopy: finite displacements, forces averaged over the states.

phonopy builds the supercell and its displacements and does the force
constants, band structure, DOS and thermal properties; this module only
supplies the forces. For an ordered state the moments are given to phonopy, so
its symmetry is that of the magnetic order; the paramagnetic average keeps the
symmetry of the lattice, and every displaced supercell sees the same random
states, re-equilibrated (the paper's "forces averaged over the random states
of the displaced supercell"). A finite set of random states breaks the lattice
symmetry a little, so the paramagnetic force constants are symmetrised
(index symmetry, acoustic sum rule) after phonopy builds them, and the
asymmetry before that is reported; ordered states keep the raw constants.
Frequencies in THz.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from ..ase_io import atoms_to_configuration
from .states import StateSpec, make_states, moment_summary

__all__ = ['FCC_PATH', 'PhononRun', 'band_path', 'born_charges']

#: The standard fcc path, points in Cartesian units of 1/a of the conventional cubic cell (no 2 pi).
FCC_PATH = (
    [
        ('G', (0, 0, 0)),
        ('X', (0, 1, 0)),
        ('W', (0.5, 1, 0)),
        ('K', (0.75, 0.75, 0)),
        ('G', (0, 0, 0)),
        ('L', (0.5, 0.5, 0.5)),
        ('U', (0.25, 1, 0.25)),
        ('W', (0.5, 1, 0)),
        ('L', (0.5, 0.5, 0.5)),
        ('K', (0.75, 0.75, 0)),
    ],
    [('U', (0.25, 1, 0.25)), ('X', (0, 1, 0))],
)


class PhononRun:
    """A phonopy object of one phase with its forces computed; ``report`` says what was done.

    unit: the (relaxed) unit cell, ASE atoms whose symbols are the potential's species.
    model: the potential (or the analytic reference); spec: the magnetic phase.
    supercell: 3 repetitions of the unit cell; primitive: phonopy's primitive_matrix ('auto', 'F', 'P': the unit
    cell itself, ...).
    distance: displacement, Angstrom. tol: moment equilibration tolerance, eV/mu_B.
    """

    def __init__(
        self,
        unit: Atoms,
        model,
        spec: StateSpec,
        *,
        supercell=(2, 2, 2),
        primitive='auto',
        distance: float = 0.01,
        tol: float = 1e-6,
    ) -> None:
        from phonopy import Phonopy
        from phonopy.structure.atoms import PhonopyAtoms

        species = tuple(model.species)
        cfg = atoms_to_configuration(unit, species)
        unit_states = make_states(cfg, species, spec) if spec.is_ordered else None
        cell = PhonopyAtoms(
            symbols=unit.get_chemical_symbols(),
            cell=unit.cell.array,
            scaled_positions=unit.get_scaled_positions(),
            magnetic_moments=None if unit_states is None else unit_states[0],
        )
        self.phonon = Phonopy(cell, supercell_matrix=np.diag([int(r) for r in supercell]), primitive_matrix=primitive)
        self.phonon.generate_displacements(distance=distance)
        sc = self.phonon.supercell
        base = Atoms(symbols=sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        if unit_states is None:
            states = make_states(atoms_to_configuration(base, species), species, spec, model)
        else:
            states = np.asarray(sc.magnetic_moments, dtype=float)[None, :]
        self.states = states
        self.calc = spec.calculator(model, states, tol)
        base.calc = self.calc
        self.energy = float(base.get_potential_energy())  # eV per supercell, state average
        self.moments = moment_summary(self.calc, atoms_to_configuration(base, species).types, species)
        # residual forces of the undisplaced supercell (non-zero for a finite set of random states) are
        # subtracted from every displaced one, as phonopy's --fz does
        residual = base.get_forces().copy()
        forces, drift, not_converged = [], 0.0, 0
        for displaced in self.phonon.supercells_with_displacements:
            atoms = Atoms(
                symbols=displaced.symbols, cell=displaced.cell, scaled_positions=displaced.scaled_positions, pbc=True
            )
            atoms.calc = self.calc
            f = atoms.get_forces() - residual
            not_converged += self.calc.not_converged
            drift = max(drift, float(np.abs(f.sum(axis=0)).max()))
            forces.append(f)
        self.phonon.forces = np.array(forces)
        self.phonon.produce_force_constants(show_drift=False)
        fc = self.phonon.force_constants
        asymmetry = float(np.abs(fc - fc.transpose(1, 0, 3, 2)).max())
        if not spec.is_ordered:
            # a finite set of random states breaks the lattice symmetry that phonopy used to build the constants
            # from one displacement per site: restore index symmetry and the acoustic sum rule
            self.phonon.symmetrize_force_constants(show_drift=False)
        self.report = {
            'supercell_atoms': len(sc),
            'primitive_atoms': len(self.phonon.primitive),
            'displacements': len(forces),
            'states': len(states),
            'force_drift_eV_per_A': drift,
            'residual_force_eV_per_A': float(np.abs(residual).max()),
            'fc_asymmetry_eV_per_A2': asymmetry,
            'fc_symmetrized': not spec.is_ordered,
            'unconverged_equilibrations': not_converged,
            'distance_A': distance,
            'mean_abs_moment_muB': self.moments,
        }

    @property
    def energy_per_primitive(self) -> float:
        """The state-averaged static energy per primitive cell, eV."""
        return self.energy * len(self.phonon.primitive) / len(self.phonon.supercell)

    def set_nac(self, epsilon: float | np.ndarray, born: dict[str, float | np.ndarray]) -> None:
        """Non-analytic correction: ``epsilon`` (scalar or 3x3) and Born charges per species (e units)."""
        eps = np.asarray(epsilon, dtype=float)
        eps = eps * np.eye(3) if eps.ndim == 0 else eps.reshape(3, 3)
        factor = 14.399645  # Hartree * Bohr in eV A: phonopy's NAC unit conversion for eV and Angstrom
        self.phonon.nac_params = {
            'born': born_charges(self.phonon.primitive.symbols, born),
            'dielectric': eps,
            'factor': factor,
        }

    def gamma_frequencies(self) -> np.ndarray:
        """Frequencies at Gamma without the non-analytic term, THz, ascending."""
        return np.sort(np.asarray(self.phonon.get_frequencies([0.0, 0.0, 0.0])))

    def bands(self, unit: Atoms, points: int = 41) -> dict:
        """Band structure along the fcc path: distances (1/A), frequencies (THz), labels and tick positions."""
        paths, labels, connections = band_path(unit, self.phonon.primitive.cell, points)
        self.phonon.run_band_structure(paths, labels=labels, path_connections=connections)
        bs = self.phonon.get_band_structure_dict()
        distances = [np.asarray(d) for d in bs['distances']]
        ticks = [float(distances[0][0])] + [float(d[-1]) for d in distances]
        return {
            'distances': np.concatenate(distances),
            'frequencies': np.concatenate(bs['frequencies']),
            'labels': labels,
            'ticks': ticks,
            'segment_points': points,
            'connections': connections,
        }

    def dos(self, mesh=(16, 16, 16)) -> dict:
        """Total DOS on a ``mesh`` (tetrahedron method): frequencies (THz), states per THz per primitive cell;
        and the number of imaginary (< -0.05 THz) mesh frequencies."""
        self.phonon.run_mesh(list(mesh))
        freqs = self.phonon.get_mesh_dict()['frequencies']
        self.phonon.run_total_dos()
        d = self.phonon.get_total_dos_dict()
        return {
            'frequency': np.asarray(d['frequency_points']),
            'dos': np.asarray(d['total_dos']),
            'imaginary_modes': int((np.asarray(freqs) < -0.05).sum()),
            'mesh_modes': int(np.size(freqs)),
        }

    def thermal(self, temperatures: np.ndarray, mesh=(16, 16, 16)) -> dict:
        """Harmonic free energy (kJ/mol), entropy and heat capacity (J/K/mol) per mol of primitive cells."""
        self.phonon.run_mesh(list(mesh))
        self.phonon.run_thermal_properties(temperatures=temperatures)
        tp = self.phonon.get_thermal_properties_dict()
        return {k: np.asarray(tp[k]) for k in ('temperatures', 'free_energy', 'entropy', 'heat_capacity')}


def band_path(unit: Atoms, primitive_cell: np.ndarray, points: int) -> tuple[list, list[str], list[bool]]:
    """The fcc path as phonopy band segments in reduced coordinates of ``primitive_cell``.

    ``unit`` must be the conventional (axis-aligned cubic or tetragonal) cell: its axis lengths scale the path.
    """
    cell = unit.cell.array
    if np.abs(cell - np.diag(np.diag(cell))).max() > 1e-6 * np.abs(cell).max():
        raise ValueError('the fcc band path needs the conventional cell with axes along x, y and z')
    lengths = np.diag(cell)
    paths, labels, connections = [], [], []
    for segment in FCC_PATH:
        for (_, qa), (_, qb) in zip(segment[:-1], segment[1:]):
            qa_red = primitive_cell @ (np.asarray(qa) / lengths)
            qb_red = primitive_cell @ (np.asarray(qb) / lengths)
            paths.append(np.linspace(qa_red, qb_red, points))
            connections.append(True)
        connections[-1] = False
        labels += [name for name, _ in segment]
    return paths, ['$\\Gamma$' if x == 'G' else x for x in labels], connections


def born_charges(symbols, born: dict[str, float | np.ndarray]) -> np.ndarray:
    """(n, 3, 3) Born effective charges of the atoms ``symbols`` from charges per species.

    Raises ValueError for a species without a charge, or when the charges do not sum to zero (charge neutrality).
    """
    missing = sorted(set(symbols) - set(born))
    if missing:
        raise ValueError(f'Born charges: none given for {", ".join(missing)}')
    z = []
    for s in symbols:
        value = np.asarray(born[s], dtype=float)
        z.append(value * np.eye(3) if value.ndim == 0 else value.reshape(3, 3))
    z = np.array(z)
    total = z.sum(axis=0)
    if np.abs(total).max() > 1e-6:
        raise ValueError(
            f'Born charges must sum to zero over the cell (charge neutrality); they sum to '
            f'{np.round(np.diag(total), 4).tolist()}'
        )
    return z
