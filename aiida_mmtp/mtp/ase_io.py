"""Conversions between :class:`Configuration` and ASE ``Atoms``; extxyz files.

In extxyz the moments are ASE's ``initial_magmoms`` (mu_B), the magnetic
forces a per-atom array ``magnetic_forces`` (eV/mu_B), and energy, forces and
stress (ASE convention, eV/A^3) the usual calculator results.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from .configuration import Configuration

__all__ = ['atoms_to_configuration', 'configuration_to_atoms', 'read_extxyz', 'write_extxyz']


def atoms_to_configuration(atoms: Atoms, species: Sequence[str], label: str = 'structure') -> Configuration:
    """A :class:`Configuration` from ``atoms``; ``species[k]`` is the symbol of type k.

    Labels (energy, forces, stress, ``magnetic_forces``) are taken from an
    attached single-point calculator or the per-atom arrays when present.
    """
    symbols = atoms.get_chemical_symbols()
    index = {s: k for k, s in enumerate(species)}
    types = []
    for i, s in enumerate(symbols):
        if s not in index:
            raise ValueError(
                f'{label}: atom {i + 1} is {s}, which is not a species of the potential ({", ".join(species)})'
            )
        types.append(index[s])
    pbc = atoms.get_pbc()
    if pbc.any() and not pbc.all():
        raise ValueError(f'{label}: mixed periodicity {pbc.tolist()} is not supported; use all or none')
    cell = np.array(atoms.get_cell()) if pbc.all() else None
    moments = None
    if 'initial_magmoms' in atoms.arrays:
        m = atoms.get_initial_magnetic_moments()
        if m.ndim != 1:
            raise ValueError(f'{label}: only collinear moments (one number per atom) are supported')
        moments = np.array(m, dtype=float)
    cfg = Configuration(positions=atoms.get_positions(), types=np.array(types), cell=cell, moments=moments)
    calc = atoms.calc
    results = getattr(calc, 'results', {}) if calc is not None else {}
    if 'energy' in results:
        cfg.energy = float(results['energy'])
    if 'forces' in results:
        cfg.forces = np.array(results['forces'], dtype=float)
    if 'stress' in results and cell is not None:
        stress = np.asarray(results['stress'], dtype=float)
        if stress.shape == (3, 3):
            stress = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        cfg.stress = stress
    if 'magnetic_forces' in atoms.arrays:
        cfg.mag_forces = np.array(atoms.arrays['magnetic_forces'], dtype=float)
    elif 'magnetic_forces' in results:
        cfg.mag_forces = np.array(results['magnetic_forces'], dtype=float)
    return cfg


def configuration_to_atoms(cfg: Configuration, species: Sequence[str]) -> Atoms:
    """An ASE ``Atoms`` for ``cfg`` with its labels attached as a single-point calculator."""
    if cfg.types.size and cfg.types.max() >= len(species):
        raise ValueError(f'configuration has species type {int(cfg.types.max())}, but only {len(species)} names given')
    atoms = Atoms(
        symbols=[species[t] for t in cfg.types],
        positions=cfg.positions,
        cell=cfg.cell if cfg.cell is not None else np.zeros((3, 3)),
        pbc=cfg.cell is not None,
    )
    if cfg.moments is not None:
        atoms.set_initial_magnetic_moments(cfg.moments)
    if cfg.mag_forces is not None:
        atoms.arrays['magnetic_forces'] = np.array(cfg.mag_forces)
    if cfg.grades is not None:
        atoms.arrays['grades'] = np.array(cfg.grades)
    atoms.info.update(cfg.features)
    results = {}
    if cfg.energy is not None:
        results['energy'] = cfg.energy
    if cfg.forces is not None:
        results['forces'] = cfg.forces
    if cfg.virial is not None and cfg.cell is not None:
        results['stress'] = cfg.stress
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def write_extxyz(configs: Iterable[Configuration], path: str | os.PathLike, species: Sequence[str]) -> None:
    """Write configurations (with moments and magnetic forces) to an extxyz file, atomically."""
    from .atomic import atomic_output

    frames = [configuration_to_atoms(c, species) for c in configs]
    with atomic_output(path) as handle:
        ase.io.write(handle, frames, format='extxyz')


def read_extxyz(path: str | os.PathLike, species: Sequence[str]) -> list[Configuration]:
    """Read all frames of an extxyz file as configurations."""
    frames = ase.io.read(path, index=':', format='extxyz')
    return [atoms_to_configuration(a, species, label=f'{path} frame {k}') for k, a in enumerate(frames)]
