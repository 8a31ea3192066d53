"""Label hygiene: which new cDFT labels may join a training set.

A converged cDFT run can still be a wrong label (shared/docs/cdft.md: with
PAW + U the all-zero constraint converges into a state 60 eV/atom below every
other label), and an early potential can drive a simulation into atoms thrown
together. Each new label is checked, in this order:

1. its shortest interatomic distance is at least ``min_distance`` (A);
2. no force exceeds ``max_force`` (eV/A);
3. its energy per atom, after the per-species reference energies fitted to
   the set by least squares are taken off, lies within
   ``max_energy_deviation`` (eV/atom) of the median of the set (the
   existing labels and the new ones together, so that an outlier among the
   first labels of a campaign is caught as well).

A refused label is recorded with its reason and never trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .configuration import Configuration
from .structures import min_distance

__all__ = ['HygieneRule', 'screen_labels']


@dataclass(frozen=True)
class HygieneRule:
    """Limits a label must meet. ``min_distance`` A, ``max_force`` eV/A, ``max_energy_deviation`` eV/atom."""

    min_distance: float = 1.5
    max_force: float = 15.0
    max_energy_deviation: float = 1.0

    @classmethod
    def from_dict(cls, values: dict | None) -> HygieneRule:
        """The rule from a dict (protocol key ``hygiene``); ValueError naming an unknown key or a bad value."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(asdict(cls())))
        if unknown:
            raise ValueError(f'hygiene: unknown keys {", ".join(unknown)} (known: {", ".join(asdict(cls()))})')
        rule = cls(**{k: float(v) for k, v in values.items()})
        for key, value in asdict(rule).items():
            if not value > 0:
                raise ValueError(f'hygiene: {key} must be positive, got {value}')
        return rule


def _species_residuals(configs: Sequence[Configuration], n_species: int) -> np.ndarray:
    """Energy per atom (eV) of each configuration less the least-squares per-species reference energies."""
    counts = np.array([np.bincount(c.types, minlength=n_species) for c in configs], dtype=float)
    energies = np.array([c.energy for c in configs], dtype=float)
    mu = np.linalg.lstsq(counts, energies, rcond=None)[0]
    return (energies - counts @ mu) / counts.sum(axis=1)


def screen_labels(
    new: Sequence[Configuration], existing: Sequence[Configuration], rule: HygieneRule = HygieneRule()
) -> list[str | None]:
    """For each of ``new`` (labelled), why it may not join ``existing`` (labelled), or None when it may.

    Configurations need energies and forces (eV, eV/A); types index the species.
    """
    new, existing = list(new), [c for c in existing if c.energy is not None]
    problems: list[str | None] = [None] * len(new)
    for k, cfg in enumerate(new):
        if cfg.energy is None or not np.isfinite(cfg.energy):
            problems[k] = 'no finite energy'
            continue
        d = min_distance(cfg)
        if d < rule.min_distance:
            problems[k] = f'atoms {d:.2f} A apart, closer than min_distance {rule.min_distance} A'
            continue
        if cfg.forces is not None:
            fmax = float(np.max(np.linalg.norm(cfg.forces, axis=1)))
            if not fmax <= rule.max_force:
                problems[k] = f'a force of {fmax:.1f} eV/A, above max_force {rule.max_force} eV/A'
    pool = existing + [c for c, why in zip(new, problems) if why is None]
    if len(pool) < 3:  # a median of fewer labels says nothing
        return problems
    n_species = int(max(c.types.max() for c in pool)) + 1
    residuals = _species_residuals(pool, n_species)
    median = float(np.median(residuals))
    accepted = [k for k, why in enumerate(problems) if why is None]
    for k, residual in zip(accepted, residuals[len(existing) :]):
        deviation = float(residual) - median
        if abs(deviation) > rule.max_energy_deviation:
            problems[k] = (f'energy {deviation:+.2f} eV/atom from the median of the set, beyond '
                           f'max_energy_deviation {rule.max_energy_deviation} eV/atom')  # fmt: skip
    return problems
