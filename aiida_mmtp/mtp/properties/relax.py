"""Relaxation of a magnetic phase before its properties: the whole cell (ordered states) or the volume (PM).

Both act on an ASE ``Atoms`` whose calculator gives the phase's (state-averaged)
energy, forces and stress, e.g. a :class:`~.states.StateAverageCalculator`.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from ..ase_io import configuration_to_atoms
from ..configuration import EV_PER_A3_IN_GPA, Configuration
from ..structures import supercell

__all__ = ['RELAX_MODES', 'relax_structure', 'supercell_atoms']

#: 'full': positions and cell (BFGS on ASE's FrechetCellFilter); 'volume': isotropic scaling to zero mean
#: pressure at fixed fractional positions (for the paramagnetic average, cubic on average); 'none'.
RELAX_MODES = ('full', 'volume', 'none')


def supercell_atoms(unit: Configuration, species: tuple[str, ...], reps) -> Atoms:
    """ASE atoms of ``unit`` repeated ``reps`` (3 ints) times, without moments (the states carry them)."""
    cell = supercell(unit.clear_labels(), tuple(int(r) for r in reps))
    cell.moments = None
    return configuration_to_atoms(cell, species)


def relax_structure(atoms: Atoms, mode: str, *, fmax: float = 1e-3, steps: int = 300) -> dict:
    """Relax ``atoms`` in place with its calculator; returns a report (mode, steps, converged, pressure, GPa).

    ``fmax``: eV/A on atoms, and |stress| * V / N for the cell (ASE's convention) in 'full' mode;
    in 'volume' mode the mean pressure is brought below ``fmax`` * 1e-2 eV/A^3 (0.0016 GPa at the default),
    in at most 50 pressure evaluations.
    """
    if mode not in RELAX_MODES:
        raise ValueError(f'relax mode {mode!r}: choose from {", ".join(RELAX_MODES)}')
    if mode == 'none':
        pressure = -float(np.mean(atoms.get_stress()[:3]))
        return {'mode': mode, 'steps': 0, 'converged': True, 'pressure_GPa': pressure * EV_PER_A3_IN_GPA}
    try:
        return _relax(atoms, mode, fmax, steps)
    except ValueError as exc:  # the potential met a structure it cannot evaluate (atoms collapsed, ...)
        raise ValueError(f'relaxation ({mode}) failed: {exc}') from exc


def _relax(atoms: Atoms, mode: str, fmax: float, steps: int) -> dict:
    if mode == 'full':
        from ase.filters import FrechetCellFilter
        from ase.optimize import BFGS

        opt = BFGS(FrechetCellFilter(atoms), logfile=None)
        converged = bool(opt.run(fmax=fmax, steps=steps))
        n_steps = opt.nsteps
    else:
        converged, n_steps = _relax_volume(atoms, fmax * 1e-2, min(steps, 50))
    pressure = -float(np.mean(atoms.get_stress()[:3]))
    return {'mode': mode, 'steps': int(n_steps), 'converged': converged, 'pressure_GPa': pressure * EV_PER_A3_IN_GPA}


def _relax_volume(atoms: Atoms, ptol: float, steps: int, max_step: float = 0.01) -> tuple[bool, int]:
    """Scale the cell isotropically (fractional positions kept) until |mean pressure| < ``ptol`` eV/A^3.

    Secant steps in the lattice scale, each at most ``max_step`` (1%), until the pressure changes sign;
    then bisection-safe secant (regula falsi, Illinois) inside the bracket.
    """
    cell0, frac = atoms.cell.array.copy(), atoms.get_scaled_positions()

    def pressure(scale: float) -> float:
        atoms.set_cell(cell0 * scale, scale_atoms=False)
        atoms.set_scaled_positions(frac)
        return -float(np.mean(atoms.get_stress()[:3]))

    s0, p0 = 1.0, pressure(1.0)
    if abs(p0) < ptol:
        return True, 0
    s1 = 1.0 + (max_step / 5 if p0 > 0 else -max_step / 5)  # positive pressure: expand
    p1 = pressure(s1)
    for k in range(2, steps + 1):
        if abs(p1) < ptol:
            return True, k
        if p0 * p1 < 0:  # bracketed: Illinois regula falsi
            s = s1 - p1 * (s1 - s0) / (p1 - p0)
            p = pressure(s)
            if p * p1 < 0:
                s0, p0 = s1, p1
            else:
                p0 *= 0.5
            s1, p1 = s, p
            continue
        slope = (p1 - p0) / (s1 - s0)
        step = -p1 / slope if slope < 0 else (max_step if p1 > 0 else -max_step)  # P falls as the volume grows
        step = float(np.clip(step, -max_step, max_step))
        s0, p0 = s1, p1
        s1 = s1 + step
        p1 = pressure(s1)
    pressure(s1)
    return abs(p1) < ptol, steps
