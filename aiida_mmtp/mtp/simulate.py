"""Simulations with the potential, every configuration graded on the fly.

- :func:`equilibrate_moments`: minimise E over the moments at fixed atoms and
  cell (L-BFGS-B, |m| <= M_max of the species, signs of clearly magnetic
  atoms kept).
- :func:`relax`: positions and cell at fixed moments (ASE BFGS, FrechetCellFilter).
- :func:`run_md`: NVT Langevin (or NVE velocity Verlet) with the moments
  re-equilibrated at every step (signs fixed, magnitudes free), optionally
  with moves of the sign pattern (DLM-MD, MD with Monte Carlo spin flips:
  :mod:`aiida_mmtp.mtp.spinflip`).

A :class:`Grader` grades each configuration met: gamma_low <= gamma <=
gamma_up keeps it as preselected; gamma > gamma_up keeps it too and stops
the run (:class:`Extrapolation`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from ase import units
from ase.calculators.calculator import Calculator, all_changes
from scipy.optimize import minimize

from .ase_io import atoms_to_configuration, configuration_to_atoms
from .calculator import MtpCalculator, ase_results
from .configuration import Configuration
from .evaluate import Result, evaluate, site_gradients
from .neighbors import neighbor_list
from .potential import Potential
from .selection import ActiveSet
from .threads import single_blas_thread

if TYPE_CHECKING:
    from .spinflip import SpinMoves

__all__ = [
    'Extrapolation',
    'Grader',
    'RunReport',
    'TooClose',
    'check_min_dist',
    'equilibrate_moments',
    'evaluate_model',
    'relax',
    'run_md',
    'moment_bounds',
    'moment_signs',
]


class Extrapolation(Exception):
    """Raised when a configuration's grade exceeds gamma_up."""

    def __init__(self, gamma: float) -> None:
        super().__init__(f'extrapolation grade {gamma:.3g} above gamma_up')
        self.gamma = gamma


class TooClose(ValueError):
    """Two atoms closer than the potential's min_dist (R_min)."""


def check_min_dist(pot: Potential, cfg: Configuration) -> None:
    """Raise :class:`TooClose` naming the pair when two atoms of ``cfg`` are closer than ``pot.r_min`` (A)."""
    offsets, nbr, vec = neighbor_list(cfg.positions, cfg.cell, pot.r_min)
    if len(nbr):
        p = int(np.argmin((vec**2).sum(axis=1)))
        i = int(np.searchsorted(offsets, p, side='right') - 1)
        raise TooClose(f'atoms {i + 1} and {int(nbr[p]) + 1} are {np.linalg.norm(vec[p]):.3f} A apart, '
                       f'closer than the potential min_dist {pot.r_min} A')  # fmt: skip


@dataclass
class Grader:
    """Grades configurations with an active set and collects the preselected ones.

    With ``active_set=None`` nothing is graded (gamma reported as 0).
    """

    pot: Potential
    active_set: ActiveSet | None
    gamma_low: float = 2.0
    gamma_up: float = 10.0
    preselected: list[Configuration] = field(default_factory=list)
    max_grade: float = 0.0  # over everything graded
    run_max_grade: float = 0.0  # since the last start_run()
    n_graded: int = 0

    def __post_init__(self) -> None:
        if self.gamma_low > self.gamma_up:
            raise ValueError(f'gamma_low ({self.gamma_low}) must not exceed gamma_up ({self.gamma_up})')
        if self.active_set is not None:
            self.active_set.check(self.pot)

    @property
    def needs_gradient(self) -> bool:
        """Whether :meth:`grade` reads dE/dtheta from the evaluation it is given (neighbourhood mode computes the
        per-atom rows itself, so the evaluation need not carry the summed gradient)."""
        return self.active_set is not None and not self.active_set.neighborhoods

    def start_run(self) -> None:
        """Reset the per-run maximum grade (the preselected list keeps growing)."""
        self.run_max_grade = 0.0

    def grade(self, cfg: Configuration, res: Result) -> float:
        """gamma of ``cfg`` from an evaluation with ``gradient=`` :attr:`needs_gradient`; may raise
        :class:`Extrapolation`.

        With an active set, raises :class:`TooClose` (a ValueError: the run stops as failed, nothing
        is preselected) when two atoms are closer than the potential's min_dist: outside the potential's
        domain, and no cDFT run with non-overlapping atomic spheres could label it.
        """
        if self.active_set is None:
            return 0.0
        check_min_dist(self.pot, cfg)
        if self.active_set.neighborhoods:  # the largest grade of the atoms' rows dV_i/dtheta
            gamma = float(self.active_set.grades(site_gradients(self.pot, cfg)).max())
        else:
            gamma = float(self.active_set.grades(res.grad / cfg.natoms)[0])
        self.n_graded += 1
        self.max_grade = max(self.max_grade, gamma)
        self.run_max_grade = max(self.run_max_grade, gamma)
        if gamma >= self.gamma_low:
            kept = cfg.clear_labels()
            kept.features['MV_grade'] = repr(gamma)
            self.preselected.append(kept)
        if gamma > self.gamma_up:
            raise Extrapolation(gamma)
        return gamma


@dataclass
class RunReport:
    """Why a simulation stopped and what it met."""

    stop_reason: str  # 'finished', 'extrapolation', 'not converged' or 'failed: <why>'
    steps: int
    max_grade: float  # of this run
    n_preselected: int  # in the grader so far (all runs)
    energy: float | None = None
    seconds: float = 0.0
    frames: list[Configuration] = field(default_factory=list)
    spin_moves: dict | None = None  # MD with sign moves: kind, attempts, accepted, acceptance, redrawn

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != 'frames'}


def evaluate_model(pot, cfg: Configuration, gradient: bool = False, forces: bool = True) -> Result:
    """Evaluate ``cfg`` with an MTP (the numba kernel) or with any other model that has ``evaluate(cfg)``.

    Other models (the analytic reference potential) give energy, forces, stress and magnetic forces but
    no dE/dtheta, so they cannot be graded. ``forces=False``: an MTP skips forces and stress (see
    :func:`~aiida_mmtp.mtp.evaluate.evaluate`); other models give them anyway.
    """
    if isinstance(pot, Potential):
        return evaluate(pot, cfg, gradient=gradient, forces=forces)
    if gradient:
        raise ValueError(f'{type(pot).__name__} has no parameter derivatives: grading needs an MTP')
    return pot.evaluate(cfg)


def _finish(pot: Potential, cfg: Configuration) -> tuple[Configuration, float | None]:
    """``cfg`` labelled by the potential, or unlabelled when it cannot be evaluated (e.g. collapsed atoms)."""
    try:
        res = evaluate_model(pot, cfg)
    except ValueError:
        return cfg.clear_labels(), None
    return res.to_configuration(cfg), res.energy


def moment_signs(moments: np.ndarray, sign_threshold: float = 0.5) -> np.ndarray:
    """+1 / -1 for the clearly magnetic atoms (|m| >= ``sign_threshold`` mu_B), 0 for the others; shape (N,)."""
    return np.where(np.abs(moments) >= sign_threshold, np.sign(moments), 0.0)


def moment_bounds(
    pot: Potential,
    cfg: Configuration,
    sign_threshold: float = 0.5,
    signs: np.ndarray | None = None,
    fixed: np.ndarray | None = None,
) -> list[tuple[float, float]]:
    """Bounds per atom (mu_B): |m| <= M_max of the species; a clearly magnetic atom keeps its sign.

    ``signs`` (N,) fixes which sign each atom keeps (0: free); by default those of
    :func:`moment_signs` of the current moments. ``fixed`` (N,) bool: atoms whose moment stays as it is.
    """
    signs = moment_signs(cfg.moments, sign_threshold) if signs is None else signs
    fixed = np.zeros(cfg.natoms, dtype=bool) if fixed is None else np.asarray(fixed, dtype=bool)
    bounds = []
    for t, m, keep, now in zip(cfg.types, signs, fixed, cfg.moments):
        hi = float(max(abs(pot.mag_min[t]), abs(pot.mag_max[t])))
        if keep:
            bounds.append((float(now), float(now)))
        elif m > 0:
            bounds.append((0.0, hi))
        elif m < 0:
            bounds.append((-hi, 0.0))
        else:
            bounds.append((-hi, hi))
    return bounds


@single_blas_thread
def equilibrate_moments(
    pot: Potential,
    cfg: Configuration,
    grader: Grader | None = None,
    *,
    tol: float = 1e-4,
    max_iter: int = 200,
    sign_threshold: float = 0.5,
    signs: np.ndarray | None = None,
    fixed: np.ndarray | None = None,
    trajectory: list[Configuration] | None = None,
    labelled: bool = True,
) -> tuple[Configuration, RunReport]:
    """Minimise E over the moments of ``cfg`` at fixed atoms and cell.

    ``tol``: largest magnetic force (eV/mu_B) on an unbounded moment at the end. ``signs``: the sign
    each atom keeps (see :func:`moment_bounds`; default: those of the clearly magnetic atoms now).
    ``fixed`` (N,) bool: atoms whose moments are not equilibrated.
    Returns the equilibrated configuration (labelled by the potential; with ``labelled=False`` unlabelled, and the
    report's energy that of the last evaluation: one evaluation fewer, for a caller that evaluates it anyway) and a
    report. ``pot`` is a
    :class:`Potential` or another model with ``evaluate(cfg)``, ``is_magnetic`` and ``mag_min``/``mag_max``
    (the analytic reference potential).
    """
    if not pot.is_magnetic:
        raise ValueError('moment equilibration needs a magnetic potential')
    if cfg.moments is None:
        raise ValueError('the configuration has no moments to equilibrate')
    t0 = time.perf_counter()
    work = cfg.clear_labels()
    grader = grader or Grader(pot, None)
    grader.start_run()
    steps = 0
    last_energy = None

    def fun(m):
        nonlocal steps, last_energy
        work.moments = np.array(m)
        res = evaluate_model(pot, work, gradient=grader.needs_gradient, forces=trajectory is not None)
        steps += 1
        last_energy = res.energy
        gamma = grader.grade(work, res)
        if trajectory is not None:
            frame = res.to_configuration(work)
            frame.features['gamma'] = repr(gamma)
            trajectory.append(frame)
        return res.energy, -res.mag_forces

    reason = 'finished'
    try:
        bounds = moment_bounds(pot, cfg, sign_threshold, signs, fixed)
        opt = minimize(
            fun, cfg.moments.copy(), jac=True, method='L-BFGS-B', bounds=bounds,
            options={'maxiter': max_iter, 'gtol': tol, 'ftol': 1e-14},
        )  # fmt: skip
        work.moments = opt.x
        if not opt.success:
            reason = 'not converged'
    except Extrapolation:
        reason = 'extrapolation'
    except ValueError as exc:  # a configuration the potential cannot evaluate: stop, keep what was found
        reason = f'failed: {exc}'
    out, energy = _finish(pot, work) if labelled else (work.clear_labels(), last_energy)
    report = RunReport(reason, steps, grader.run_max_grade, len(grader.preselected), energy, time.perf_counter() - t0)
    return out, report


class GradedCalculator(Calculator):
    """MTP calculator that grades every configuration it evaluates; optionally equilibrates moments first.

    With ``equilibrate=True`` (MD) the moments are minimised at every call,
    starting from the last equilibrated ones carried on linearly (2 m_n - m_n-1,
    the step's likely change: about 13% fewer evaluations per MD step than m_n, measured
    at 512 atoms); ``self.moments`` holds them and ``self.signs`` the signs they keep
    (those of the start, so that a moment that collapses to zero cannot come back
    flipped). :meth:`set_moments` starts a new history (a move of the sign pattern).
    """

    implemented_properties = MtpCalculator.implemented_properties

    def __init__(self, pot: Potential, grader: Grader, equilibrate: bool = False, eq_tol: float = 1e-5) -> None:
        super().__init__()
        self.pot, self.grader, self.equilibrate, self.eq_tol = pot, grader, equilibrate, eq_tol
        self.moments: np.ndarray | None = None
        self.signs: np.ndarray | None = None
        self.gamma = 0.0
        self._before: np.ndarray | None = None  # the equilibrated moments of the call before the last

    def set_moments(self, moments: np.ndarray, signs: np.ndarray | None = None) -> None:
        """Start from ``moments`` (mu_B, (N,)) with ``signs`` kept (default: as they are), with no history."""
        self.moments = np.array(moments, dtype=float)
        self.signs = moment_signs(self.moments) if signs is None else np.array(signs, dtype=float)
        self._before = None

    def calculate(self, atoms=None, properties=('energy',), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        cfg = atoms_to_configuration(self.atoms, self.pot.species)
        if self.equilibrate:
            if self.moments is not None:
                # a guess past zero or M_max starts at the bound: L-BFGS-B clips it into moment_bounds(signs)
                cfg.moments = self.moments.copy() if self._before is None else 2.0 * self.moments - self._before
            cfg, _ = equilibrate_moments(self.pot, cfg, tol=self.eq_tol, signs=self.signs, labelled=False)
            self._before = self.moments
            self.moments = cfg.moments.copy()
        res = evaluate_model(self.pot, cfg, gradient=self.grader.needs_gradient)
        self.gamma = self.grader.grade(cfg, res)
        self.results = ase_results(res)


def _species(pot: Potential) -> tuple[str, ...]:
    if pot.species is None:
        raise ValueError('the potential does not name its species (give them, e.g. mmtp ... --species Cr N)')
    return pot.species


def _frame(atoms, calc: GradedCalculator, species) -> Configuration:
    cfg = atoms_to_configuration(atoms, species)
    if calc.moments is not None:
        cfg.moments = calc.moments.copy()
    cfg.energy = float(calc.results['energy'])
    cfg.forces = np.array(calc.results['forces'])
    cfg.mag_forces = np.array(calc.results['magnetic_forces'])
    cfg.features['gamma'] = repr(calc.gamma)
    return cfg


@single_blas_thread
def relax(
    pot: Potential,
    cfg: Configuration,
    grader: Grader | None = None,
    *,
    fmax: float = 0.01,
    relax_cell: bool = True,
    steps: int = 500,
    trajectory: list[Configuration] | None = None,
    equilibrate: bool = True,
    eq_tol: float = 1e-4,
) -> tuple[Configuration, RunReport]:
    """The paper's two stages: equilibrate the moments at fixed atoms, then relax positions (and the cell) at
    those fixed moments until forces < ``fmax`` eV/A.

    ``equilibrate``: run the first stage (:func:`equilibrate_moments`, tolerance ``eq_tol`` eV/mu_B, graded like
    the rest) when the potential is magnetic; False relaxes at the moments given. The cell is converged when
    |stress| * volume / N_atoms < ``fmax`` (ASE's FrechetCellFilter convention). The report counts the steps of
    both stages; a run stopped by extrapolation in the first stage does not move the atoms.
    """
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    t0 = time.perf_counter()
    grader = grader or Grader(pot, None)
    eq_steps, eq_grade = 0, 0.0
    if equilibrate and pot.is_magnetic and cfg.moments is not None:
        cfg, first = equilibrate_moments(pot, cfg, grader, tol=eq_tol, trajectory=trajectory)
        if first.stop_reason == 'extrapolation' or first.stop_reason.startswith('failed'):
            first.seconds = time.perf_counter() - t0
            return cfg, first
        eq_steps, eq_grade = first.steps, first.max_grade
    grader.start_run()
    atoms = configuration_to_atoms(cfg.clear_labels(), _species(pot))
    calc = GradedCalculator(pot, grader)
    atoms.calc = calc
    target = FrechetCellFilter(atoms) if relax_cell and cfg.cell is not None else atoms
    opt = BFGS(target, logfile=None)
    if trajectory is not None:
        opt.attach(lambda: trajectory.append(_frame(atoms, calc, pot.species)))
    reason = 'finished'
    try:
        converged = opt.run(fmax=fmax, steps=steps)
        if not converged:
            reason = 'not converged'
    except Extrapolation:
        reason = 'extrapolation'
    except ValueError as exc:
        reason = f'failed: {exc}'
    out = atoms_to_configuration(atoms, pot.species)
    out.moments = cfg.moments.copy() if cfg.moments is not None else None
    out, energy = _finish(pot, out)
    report = RunReport(reason, eq_steps + opt.nsteps, max(eq_grade, grader.run_max_grade), len(grader.preselected),
                       energy, time.perf_counter() - t0)  # fmt: skip
    return out, report


@single_blas_thread
def run_md(
    pot: Potential,
    cfg: Configuration,
    grader: Grader | None = None,
    *,
    temperature: float = 300.0,
    timestep: float = 1.0,
    steps: int = 100,
    friction: float = 0.01,
    seed: int = 0,
    ensemble: str = 'nvt',
    equilibrate: bool = True,
    trajectory: list[Configuration] | None = None,
    progress: Callable[[int, float, float], None] | None = None,
    progress_every: int = 0,
    spin: SpinMoves | None = None,
) -> tuple[Configuration, RunReport]:
    """Molecular dynamics: ``temperature`` K, ``timestep`` fs, ``friction`` 1/fs (Langevin), seeded.

    ``ensemble='nve'`` runs velocity Verlet (no thermostat) after drawing
    Maxwell-Boltzmann velocities. With ``equilibrate`` the moments relax at
    every step; otherwise they stay as given. ``spin``: moves of the sign
    pattern every ``spin.every`` steps (DLM redraws or Metropolis flips at
    ``temperature``; :mod:`aiida_mmtp.mtp.spinflip`), counted in ``spin`` and
    in the report's ``spin_moves``. Trajectory frames carry their energy
    (eV), grade (``gamma``) and, with moments, sign pattern (``signs``).
    """
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary
    from ase.md.verlet import VelocityVerlet

    from .spinflip import apply_moves, sign_string

    for name, value, ok in (('temperature', temperature, temperature >= 0), ('timestep', timestep, timestep > 0),
                            ('friction', friction, friction >= 0), ('steps', steps, steps >= 1)):  # fmt: skip
        if not (ok and np.isfinite(value)):
            raise ValueError(f'md: {name} must be {"positive" if name in ("timestep", "steps") else "non-negative"}, '
                             f'got {value}')  # fmt: skip
    if ensemble not in ('nvt', 'nve'):
        raise ValueError(f"md: ensemble must be 'nvt' or 'nve', got {ensemble!r}")
    t0 = time.perf_counter()
    grader = grader or Grader(pot, None)
    grader.start_run()
    atoms = configuration_to_atoms(cfg.clear_labels(), _species(pot))
    calc = GradedCalculator(pot, grader, equilibrate=equilibrate and pot.is_magnetic)
    if cfg.moments is not None:
        calc.set_moments(cfg.moments)
    atoms.calc = calc
    if spin is not None and (calc.signs is None or not np.any(calc.signs) or not calc.equilibrate):
        raise ValueError('md: spin moves need a magnetic potential and moments of at least 0.5 mu_B to move')
    rng = np.random.default_rng(seed)
    masses = atoms.get_masses()[:, None]  # Maxwell-Boltzmann momenta, seeded
    atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * temperature))
    Stationary(atoms)
    if ensemble == 'nvt':
        dyn = Langevin(
            atoms, timestep * units.fs, temperature_K=temperature, friction=friction / units.fs, fixcm=False, rng=rng
        )
    elif ensemble == 'nve':
        dyn = VelocityVerlet(atoms, timestep * units.fs)
    else:
        raise ValueError(f"ensemble must be 'nvt' or 'nve', got {ensemble!r}")

    def observe():
        if trajectory is not None:
            frame = _frame(atoms, calc, pot.species)
            frame.features['kinetic_energy'] = repr(float(atoms.get_kinetic_energy()))
            if calc.signs is not None:
                frame.features['signs'] = sign_string(calc.signs)
            trajectory.append(frame)
        if progress is not None and progress_every and dyn.nsteps % progress_every == 0:
            progress(dyn.nsteps, float(atoms.get_temperature()), calc.gamma)

    def move_signs():
        if spin is None or dyn.nsteps == 0 or dyn.nsteps % spin.every:
            return
        here = _frame(atoms, calc, pot.species)
        moved, signs, _ = apply_moves(pot, here, calc.signs, float(calc.results['energy']), temperature, spin,
                                      rng, grader)  # fmt: skip
        calc.set_moments(moved.moments, signs)
        calc.reset()  # the next step's forces are those of the new pattern

    dyn.attach(observe)
    dyn.attach(move_signs)
    reason = 'finished'
    try:
        dyn.run(steps)
    except Extrapolation:
        reason = 'extrapolation'
    except ValueError as exc:
        reason = f'failed: {exc}'
    out = atoms_to_configuration(atoms, pot.species)
    if calc.moments is not None:
        out.moments = calc.moments.copy()
    elif cfg.moments is not None:
        out.moments = cfg.moments.copy()
    out, energy = _finish(pot, out)
    report = RunReport(
        reason, dyn.nsteps, grader.run_max_grade, len(grader.preselected), energy, time.perf_counter() - t0
    )
    if spin is not None:
        report.spin_moves = spin.as_dict()
    return out, report


def print_md_progress(step: int, temperature: float, gamma: float) -> None:
    print(f'md: step {step:6d}  T {temperature:7.1f} K  gamma {gamma:.3g}', file=sys.stderr, flush=True)
