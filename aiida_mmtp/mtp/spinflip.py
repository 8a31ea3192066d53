"""Moves of the sign pattern during MD: disordered-local-moment MD (DLM-MD) and MD with Monte Carlo spin flips (MDMC).

The paper's MD keeps every Cr moment's sign for the whole run; these moves let the magnetic order itself change, so
that active learning meets the sign patterns a paramagnet visits.

- ``dlm``: every ``every`` MD steps the sign pattern of the magnetic species is redrawn at random, with
  ``round(up_fraction x n)`` moments up per species (the paper's random 50/50 states); the magnitudes are then
  re-equilibrated at the new signs, as at every MD step.
- ``mdmc``: every ``every`` MD steps, ``attempts`` Metropolis moves: flip one magnetic atom's sign, chosen
  uniformly, re-equilibrate the magnitudes at the new signs (atoms fixed), and accept with
  min(1, exp(-dE / k_B T)), dE the change of the equilibrated energy (eV), T the run's temperature (K). The proposal
  is symmetric, so at fixed atoms the moves sample sign patterns with Boltzmann weights of their equilibrated
  energies (tested).

Every state met is graded with the run's :class:`~aiida_mmtp.mtp.simulate.Grader`: each redrawn pattern and each
trial flip, accepted or not, after its magnitudes are equilibrated. A trial above gamma_up stops the run as any
extrapolation does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import units

from .configuration import Configuration
from .simulate import Grader, equilibrate_moments, evaluate_model, run_md
from .structures import random_collinear_moments

__all__ = [
    'SPIN_MOVES',
    'SpinMoves',
    'apply_moves',
    'flip_trial',
    'metropolis_flips',
    'redraw',
    'redraw_signs',
    'sample_sign_patterns',
    'sign_string',
]

#: The kinds of sign-pattern moves.
SPIN_MOVES = ('dlm', 'mdmc')


@dataclass
class SpinMoves:
    """What moves the sign pattern during MD, and what they did.

    ``kind``: ``dlm`` or ``mdmc``; ``every``: MD steps between moves; ``attempts``: flips tried per move (mdmc);
    ``up_fraction``: moments up per magnetic species after a redraw (dlm); ``eq_tol``: largest magnetic force
    (eV/mu_B) left by the magnitude equilibration of a trial state.
    """

    kind: str
    every: int = 10
    attempts: int = 1
    up_fraction: float = 0.5
    eq_tol: float = 1e-5
    attempted: int = 0
    accepted: int = 0
    redrawn: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SPIN_MOVES:
            raise ValueError(f'spin moves: kind must be one of {", ".join(SPIN_MOVES)}, got {self.kind!r}')
        if self.every < 1 or self.attempts < 1:
            raise ValueError(f'spin moves: every and attempts must be >= 1, got {self.every} and {self.attempts}')
        if not 0.0 <= self.up_fraction <= 1.0:
            raise ValueError(f'spin moves: up_fraction must lie in [0, 1], got {self.up_fraction}')

    @property
    def acceptance(self) -> float | None:
        """Accepted / attempted flips (None before any attempt)."""
        return self.accepted / self.attempted if self.attempted else None

    def as_dict(self) -> dict:
        return {'kind': self.kind, 'every': self.every, 'attempts': self.attempted, 'accepted': self.accepted,
                'acceptance': self.acceptance, 'redrawn': self.redrawn}  # fmt: skip


def sign_string(signs: np.ndarray) -> str:
    """The sign pattern as text, one character per atom: ``+``, ``-``, or ``0`` (no magnetic sign)."""
    return ''.join('+' if s > 0 else '-' if s < 0 else '0' for s in signs)


def redraw_signs(signs: np.ndarray, types: np.ndarray, up_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A new sign pattern: per species with signs (the magnetic ones), ``round(up_fraction x n)`` of its n atoms
    up, the others down, drawn uniformly (:func:`~aiida_mmtp.mtp.structures.random_collinear_moments`); atoms
    without a sign keep 0. Shapes (N,)."""
    signed = np.where(signs != 0, types, -1)  # atoms without a sign join no species
    return random_collinear_moments(signed, {int(t): 1.0 for t in np.unique(types[signs != 0])}, rng, up_fraction)


def _equilibrated(pot, cfg: Configuration, signs: np.ndarray, grader: Grader, eq_tol: float):
    """``cfg`` with its moments equilibrated at ``signs`` (atoms fixed), graded; its energy (eV)."""
    eq, report = equilibrate_moments(pot, cfg, tol=eq_tol, signs=signs)
    if report.stop_reason.startswith('failed'):
        raise ValueError(report.stop_reason[len('failed: ') :])
    # equilibrate_moments labelled eq already; evaluate again only for the parameter gradient grading needs (or to
    # raise why the potential cannot evaluate it, when it left eq unlabelled)
    res = evaluate_model(pot, eq, gradient=True) if grader.needs_gradient or eq.energy is None else None
    eq.features['gamma'] = repr(grader.grade(eq, res))
    return eq, float(eq.energy if res is None else res.energy)


def flip_trial(pot, cfg: Configuration, signs: np.ndarray, site: int, grader: Grader, eq_tol: float = 1e-5):
    """The state with atom ``site``'s sign flipped and every magnitude re-equilibrated (atoms fixed), graded.

    Returns the trial configuration, its signs (N,) and its equilibrated energy (eV); raises
    :class:`Extrapolation` when its grade is above gamma_up."""
    trial_signs = signs.copy()
    trial_signs[site] = -trial_signs[site]
    trial = cfg.clear_labels()
    trial.moments = np.asarray(cfg.moments, dtype=float).copy()
    trial.moments[site] = -trial.moments[site]
    eq, energy = _equilibrated(pot, trial, trial_signs, grader, eq_tol)
    return eq, trial_signs, energy


def metropolis_flips(
    pot,
    cfg: Configuration,
    signs: np.ndarray,
    energy: float,
    temperature: float,
    moves: SpinMoves,
    rng: np.random.Generator,
    grader: Grader,
) -> tuple[Configuration, np.ndarray, float]:
    """``moves.attempts`` Metropolis spin flips at fixed atoms from the equilibrated state ``cfg`` (signs (N,),
    energy eV) at ``temperature`` K (inf: every flip accepted). Returns the state reached, its signs and energy."""
    sites = np.flatnonzero(signs != 0)
    if sites.size == 0:
        raise ValueError('spin flips need atoms with a magnetic sign (|m| >= 0.5 mu_B)')
    kt = units.kB * temperature
    for _ in range(moves.attempts):
        site = int(sites[rng.integers(sites.size)])
        moves.attempted += 1  # counted even when the trial extrapolates
        trial, trial_signs, trial_energy = flip_trial(pot, cfg, signs, site, grader, moves.eq_tol)
        delta = trial_energy - energy
        if delta <= 0 or (kt > 0 and rng.random() < np.exp(-delta / kt)):
            cfg, signs, energy = trial, trial_signs, trial_energy
            moves.accepted += 1
    return cfg, signs, energy


def redraw(pot, cfg: Configuration, signs: np.ndarray, moves: SpinMoves, rng, grader: Grader):
    """DLM move: a new random sign pattern, magnitudes kept and re-equilibrated, graded. Returns the state, its
    signs (N,) and energy (eV)."""
    new_signs = redraw_signs(signs, cfg.types, moves.up_fraction, rng)
    trial = cfg.clear_labels()
    trial.moments = np.abs(np.asarray(cfg.moments, dtype=float)) * np.where(new_signs != 0, new_signs, 1.0)
    eq, energy = _equilibrated(pot, trial, new_signs, grader, moves.eq_tol)
    moves.redrawn += 1
    return eq, new_signs, energy


def apply_moves(pot, cfg: Configuration, signs: np.ndarray, energy: float, temperature: float, moves: SpinMoves,
                rng: np.random.Generator, grader: Grader) -> tuple[Configuration, np.ndarray, float]:  # fmt: skip
    """One move of ``moves.kind`` from the equilibrated state ``cfg`` at fixed atoms (see the module docstring)."""
    if moves.kind == 'dlm':
        return redraw(pot, cfg, signs, moves, rng, grader)
    return metropolis_flips(pot, cfg, signs, energy, temperature, moves, rng, grader)


def sample_sign_patterns(
    model,
    cfg: Configuration,
    magnitude: dict[int, float],
    n_patterns: int,
    *,
    kind: str = 'dlm',
    temperature: float = 1000.0,
    every: int = 10,
    attempts: int = 1,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """Sign patterns of the magnetic atoms as MD with sign moves visits them: a paramagnetic state set.

    ``model`` runs NVT MD of ``cfg`` at ``temperature`` K (moments re-equilibrated at every step) from a random
    50/50 pattern, with ``kind`` moves every ``every`` steps (``dlm``: redraws; ``mdmc``: ``attempts`` Metropolis
    flips at the run's temperature); the pattern held just before each move is one sample. ``magnitude`` maps an
    atom type to its starting moment size (mu_B). Returns the (n_patterns, N) signed starting moments (mu_B: the
    sampled signs times ``magnitude``) and the MD report (a dict). Raises ValueError when the run stops early.
    """
    if n_patterns < 1:
        raise ValueError(f'sign-pattern sampling needs at least one pattern, got {n_patterns}')
    rng = np.random.default_rng(seed)
    start = cfg.clear_labels()
    start.moments = random_collinear_moments(cfg.types, magnitude, rng)
    frames: list[Configuration] = []
    moves = SpinMoves(kind, every=every, attempts=attempts)
    _, report = run_md(
        model, start, temperature=temperature, steps=n_patterns * every, seed=seed, trajectory=frames, spin=moves
    )
    if report.stop_reason != 'finished':
        raise ValueError(f'{kind} sampling stopped after {report.steps} of {n_patterns * every} steps: '
                         f'{report.stop_reason}')  # fmt: skip
    sizes = np.array([magnitude.get(int(t), 0.0) for t in cfg.types])
    chosen = [frames[every * (k + 1)] for k in range(n_patterns)]  # frame j follows step j; moves come after it
    signs = np.array([[{'+': 1.0, '-': -1.0}.get(c, 0.0) for c in f.features['signs']] for f in chosen])
    return signs * sizes, report.as_dict()
