"""Quasi-harmonic thermal expansion and heat capacity (phonopy's QHA) of a magnetic phase.

At each lattice scale the (state-averaged) static energy and the harmonic
phonon free energy, entropy and heat capacity go to ``phonopy.PhonopyQHA``,
which fits the equation of state and minimises the Gibbs energy at zero
pressure. Volumes per primitive cell (A^3), energies eV; results: linear
thermal expansion coefficient alpha = beta / 3 (1/K, isotropic cells) and
the isobaric heat capacity per atom (J/K/mol of atoms) against temperature.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from .phonons import PhononRun
from .states import StateSpec

__all__ = ['GAS_CONSTANT', 'MIN_VOLUMES', 'quasi_harmonic']

MIN_VOLUMES = 5  # phonopy's equation-of-state fits have 4 parameters: 5 volumes are the fewest that test them
GAS_CONSTANT = 8.314462618  # J/K/mol: 3R is the Dulong-Petit heat capacity per mol of atoms


def quasi_harmonic(
    unit: Atoms,
    model,
    spec: StateSpec,
    scales,
    *,
    t_max: float = 1500.0,
    t_step: float = 10.0,
    mesh=(12, 12, 12),
    eos: str = 'vinet',
    progress=None,
    **phonon_kwargs,
) -> dict:
    """QHA of ``unit`` at the lattice ``scales`` (at least :data:`MIN_VOLUMES`, e.g. 0.98 .. 1.03).

    ``phonon_kwargs`` go to :class:`~.phonons.PhononRun` (supercell, primitive, distance, tol).
    Returns temperatures (K), alpha (1/K, linear), beta (1/K, volumetric), cp and cv per atom
    (J/K/mol of atoms, cv at the equilibrium volume of each temperature), V(T) (A^3 per primitive cell),
    B(T) (GPa), and the per-volume inputs (volumes, energies, imaginary mode counts).
    """
    from phonopy import PhonopyQHA

    scales = sorted(float(s) for s in scales)
    if len(scales) < MIN_VOLUMES:
        raise ValueError(f'QHA needs at least {MIN_VOLUMES} volumes (lattice scales), got {len(scales)}')
    if len(set(scales)) != len(scales):
        raise ValueError(f'QHA lattice scales must differ, got {scales}')
    temperatures = np.arange(0.0, t_max + 3 * t_step + 0.5 * t_step, t_step)
    volumes, energies, free, entropy, cv, imaginary = [], [], [], [], [], []
    n_atoms = None
    for k, s in enumerate(scales):
        atoms = unit.copy()
        atoms.set_cell(unit.cell.array * s, scale_atoms=True)
        run = PhononRun(atoms, model, spec, **phonon_kwargs)
        n_atoms = len(run.phonon.primitive)
        tp = run.thermal(temperatures, mesh)
        freqs = run.phonon.get_mesh_dict()['frequencies']
        imaginary.append(int((np.asarray(freqs) < -0.05).sum()))
        volumes.append(float(run.phonon.primitive.volume))
        energies.append(run.energy_per_primitive)
        free.append(tp['free_energy'])
        entropy.append(tp['entropy'])
        cv.append(tp['heat_capacity'])
        if progress:
            progress(
                f'volume {k + 1}/{len(scales)}: scale {s:g}, V {volumes[-1]:.3f} A^3, '
                f'E {energies[-1]:.5f} eV per primitive cell'
            )
    qha = PhonopyQHA(
        volumes=volumes,
        electronic_energies=energies,
        temperatures=temperatures,
        free_energy=np.array(free).T,
        cv=np.array(cv).T,
        entropy=np.array(entropy).T,
        eos=eos,
        t_max=t_max,
    )
    beta = np.asarray(qha.thermal_expansion)
    n_t = len(beta)
    cp = np.asarray(qha.heat_capacity_P_numerical)[:n_t] / n_atoms
    volume_t = np.asarray(qha.volume_temperature)[:n_t]
    # harmonic cv at the QHA volume of each temperature, interpolated between the computed volumes
    cv_grid = np.array(cv)[:, :n_t] / n_atoms
    cv_t = np.array([np.interp(volume_t[i], volumes, cv_grid[:, i]) for i in range(n_t)])
    return {
        'temperatures': temperatures[:n_t],
        'alpha': beta / 3.0,
        'beta': beta,
        'cp': cp,
        'cv': cv_t,
        'volume': volume_t,
        'bulk_modulus': np.asarray(qha.bulk_modulus_temperature)[:n_t],
        'volumes': np.array(volumes),
        'energies': np.array(energies),
        'scales': np.array(scales),
        'imaginary_modes': imaginary,
        'atoms_per_primitive': n_atoms,
        'eos': eos,
    }
