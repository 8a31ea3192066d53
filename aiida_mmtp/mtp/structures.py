"""Small structure builders: B1 (rocksalt) cells, random displacements and collinear moment states."""

from __future__ import annotations

import numpy as np

from .configuration import Configuration

__all__ = ['rocksalt', 'supercell', 'rattle', 'random_collinear_moments']

_B1_BASIS = np.array(
    [
        [0.0, 0.0, 0.0, 0], [0.5, 0.0, 0.0, 1], [0.0, 0.5, 0.5, 0], [0.5, 0.5, 0.5, 1],
        [0.5, 0.0, 0.5, 0], [0.0, 0.0, 0.5, 1], [0.5, 0.5, 0.0, 0], [0.0, 0.5, 0.0, 1],
    ]
)  # fmt: skip


def rocksalt(a: float, primitive: bool = False) -> Configuration:
    """B1 cell of lattice parameter ``a`` (Angstrom): cation type 0, anion type 1.

    ``primitive=False``: the 8-atom cubic cell; ``True``: the 2-atom fcc primitive cell.
    """
    if primitive:
        cell = 0.5 * a * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
        return Configuration(positions=np.array([[0.0, 0.0, 0.0], [0.5 * a, 0.0, 0.0]]), types=[0, 1], cell=cell)
    return Configuration(positions=_B1_BASIS[:, :3] * a, types=_B1_BASIS[:, 3].astype(int), cell=np.eye(3) * a)


def supercell(cfg: Configuration, reps: tuple[int, int, int]) -> Configuration:
    """Replicate ``cfg`` ``reps`` times along its lattice vectors (moments and types repeated)."""
    if cfg.cell is None:
        raise ValueError('only a periodic configuration can be replicated')
    shifts = np.array([[i, j, k] for i in range(reps[0]) for j in range(reps[1]) for k in range(reps[2])], dtype=float)
    positions = (cfg.positions[None, :, :] + (shifts @ cfg.cell)[:, None, :]).reshape(-1, 3)
    n = len(shifts)
    return Configuration(
        positions=positions,
        types=np.tile(cfg.types, n),
        cell=cfg.cell * np.array(reps, dtype=float)[:, None],
        moments=None if cfg.moments is None else np.tile(cfg.moments, n),
    )


def rattle(cfg: Configuration, amplitude: float, rng: np.random.Generator) -> Configuration:
    """A copy with every atom displaced uniformly within +-``amplitude`` Angstrom per axis."""
    out = cfg.clear_labels()
    out.positions = cfg.positions + rng.uniform(-amplitude, amplitude, size=cfg.positions.shape)
    return out


def random_collinear_moments(
    types: np.ndarray, magnitude: dict[int, float], rng: np.random.Generator, up_fraction: float = 0.5
) -> np.ndarray:
    """Signed moments (mu_B, shape (N,)): each magnetic type gets exactly round(up_fraction * n) up moments.

    ``magnitude`` maps a type to its moment size; types not in it get 0.
    """
    moments = np.zeros(len(types))
    for t, size in magnitude.items():
        idx = np.flatnonzero(types == t)
        n_up = int(round(up_fraction * idx.size))
        signs = np.full(idx.size, -1.0)
        signs[rng.permutation(idx.size)[:n_up]] = 1.0
        moments[idx] = signs * size
    return moments
