"""Small structure builders: B1 (rocksalt) cells, random displacements and collinear moment states."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .configuration import Configuration

__all__ = [
    'VOIGT_COMPONENTS',
    'initial_configurations',
    'layered_afm',
    'magnetic_states',
    'min_distance',
    'ordered_signs',
    'perturb_moments',
    'random_collinear_moments',
    'rattle',
    'rocksalt',
    'scaled',
    'scan_configurations',
    'strained',
    'supercell',
]

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


def layered_afm(cfg: Configuration, magnitude: dict[int, float]) -> np.ndarray | None:
    """AFM1 moments (mu_B, shape (N,)): magnetic atoms in alternating layers along the third cell vector.

    Layers are the distinct fractional coordinates along c (0.01 tolerance); layer k gets sign (-1)^k.
    None when all magnetic atoms lie in one layer (no such AFM order in this cell).
    """
    frac = np.linalg.solve(cfg.cell.T, cfg.positions.T).T[:, 2] % 1.0
    frac[frac > 1 - 0.005] = 0.0
    moments = np.zeros(cfg.natoms)
    magnetic = np.flatnonzero(np.isin(cfg.types, list(magnitude)))
    layers = np.unique(np.round(frac[magnetic], 2))
    if layers.size < 2:
        return None
    for i in magnetic:
        k = int(np.argmin(np.abs(layers - np.round(frac[i], 2))))
        moments[i] = (-1.0) ** k * magnitude[int(cfg.types[i])]
    return moments


def magnetic_states(
    cfg: Configuration, magnitude: dict[int, float], n_random: int, rng: np.random.Generator
) -> list[tuple[str, np.ndarray]]:
    """Named collinear states of ``cfg``: 'FM', 'AFM' (layered, if the cell has one), 'random-1' ... (50% up).

    Random states need at least two magnetic atoms; moments in mu_B, shape (N,).
    """
    fm = np.array([magnitude.get(int(t), 0.0) for t in cfg.types])
    states = [('FM', fm)]
    afm = layered_afm(cfg, magnitude)
    if afm is not None:
        states.append(('AFM', afm))
    if np.count_nonzero(fm) >= 2:
        states += [(f'random-{k + 1}', random_collinear_moments(cfg.types, magnitude, rng)) for k in range(n_random)]
    return states


def scaled(cfg: Configuration, factor: float) -> Configuration:
    """A copy with cell and positions scaled isotropically by ``factor`` (lattice parameter ratio)."""
    out = cfg.copy()
    out.positions = cfg.positions * factor
    out.cell = cfg.cell * factor
    return out


def perturb_moments(moments: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Each moment scaled by a uniform factor in [1 - fraction, 1 + fraction] (signs kept)."""
    return moments * rng.uniform(1.0 - fraction, 1.0 + fraction, size=moments.shape)


def initial_configurations(
    cells: list[Configuration],
    magnitude: dict[int, float],
    *,
    scales: list[float],
    n_random: int,
    n_displaced: int,
    displacement: float,
    n_perturbed: int,
    perturbation: float,
    seed: int,
    states: Sequence[str] | Sequence[Sequence[str]] = ('FM', 'AFM', 'random'),
    names: Sequence[str] | None = None,
) -> list[Configuration]:
    """The paper's initial training set (Kotykhov et al., sec. II.D), seeded.

    For each cell and lattice scale: the states of :func:`magnetic_states`; each
    ideal cell plus ``n_displaced`` copies with every atom displaced uniformly
    within +-``displacement`` A; then each of those plus ``n_perturbed`` copies
    with every moment scaled by up to +-``perturbation`` (0.15 in the paper).
    Paper: 3 scales x {AFM, FM, 4 random} x (1 + 2) x (1 + 2) = 162. The random states of a cell are drawn
    once and shared by every scale (the paper's 10 MD states over 4.12-4.20 A). ``states`` keeps only the
    named kinds of state ('FM', 'AFM', 'random'), for every cell or (a list of lists) per cell.
    The ``features`` of each configuration say where it came from (cell name, scale, state, kind).
    """
    rng = np.random.default_rng(seed)
    per_cell = [tuple(states)] * len(cells) if all(isinstance(x, str) for x in states) else list(states)
    if len(per_cell) != len(cells):
        raise ValueError(f'{len(per_cell)} lists of states for {len(cells)} cells')
    out = []
    for c, (cell, kinds) in enumerate(zip(cells, per_cell)):
        states = magnetic_states(cell, magnitude, n_random, rng)  # drawn once: the same states at every scale
        for factor in scales:
            base = scaled(cell, factor)
            for name, moments in states:
                if name.split('-')[0] not in kinds:
                    continue
                ideal = base.clear_labels()
                ideal.moments = moments.copy()
                displaced = [ideal] + [rattle(ideal, displacement, rng) for _ in range(n_displaced)]
                for d, cfg in enumerate(displaced):
                    variants = [cfg] + [cfg.copy() for _ in range(n_perturbed)]
                    for p, var in enumerate(variants):
                        if p:
                            var.moments = perturb_moments(cfg.moments, perturbation, rng)
                        var.features = {
                            'origin': f'{names[c] if names else c}:scale{factor:g}:{name}:displaced{d}:perturbed{p}'
                        }
                        out.append(var)
    return out


def min_distance(cfg: Configuration) -> float:
    """The shortest interatomic distance in Angstrom, periodic images included (inf for a single atom alone).

    A neighbour list with a growing cutoff: from half the mean spacing (volume per atom)^(1/3), doubled until
    a pair turns up. It stops below twice the shortest distance, so the list stays short (memory linear in N).
    """
    from .neighbors import neighbor_list

    n = cfg.natoms
    if n == 0 or (cfg.cell is None and n < 2):
        return float('inf')
    if cfg.cell is not None:
        volume = abs(float(np.linalg.det(cfg.cell)))
    else:
        span = np.ptp(cfg.positions, axis=0)
        volume = float(np.prod(np.maximum(span, span.max() / n)))  # a flat or linear set gets a thin box
    r_cut = max(0.5 * (volume / n) ** (1 / 3), 1e-6)
    while True:  # ends: a self-image (periodic) or a pair (two atoms or more) once r_cut passes the cell size
        _, _, vec = neighbor_list(cfg.positions, cfg.cell, r_cut, reuse=False)
        if len(vec):
            return float(np.sqrt(np.einsum('ij,ij->i', vec, vec).min()))
        r_cut *= 2.0


_VOIGT = {'xx': (0, 0), 'yy': (1, 1), 'zz': (2, 2), 'yz': (1, 2), 'xz': (0, 2), 'xy': (0, 1)}
#: The Voigt strain and stress components, in Voigt order.
VOIGT_COMPONENTS = tuple(_VOIGT)


def strained(cfg: Configuration, component: str, magnitude: float) -> Configuration:
    """A copy under the symmetric strain ``magnitude`` of one Voigt ``component`` (xx, yy, zz, yz, xz, xy).

    Shear components are engineering strains (eps_ab = eps_ba = magnitude / 2); cell rows and positions
    are deformed alike (r -> (1 + eps) r), so fractional coordinates are kept.
    """
    if component not in _VOIGT:
        raise ValueError(f'strain component {component!r}: choose from {", ".join(_VOIGT)}')
    a, b = _VOIGT[component]
    eps = np.zeros((3, 3))
    eps[a, b] += magnitude / (1 if a == b else 2)
    eps[b, a] += 0 if a == b else magnitude / 2
    out = cfg.clear_labels()
    out.cell = cfg.cell @ (np.eye(3) + eps).T
    out.positions = cfg.positions @ (np.eye(3) + eps).T
    return out


def ordered_signs(cfg: Configuration, magnetic: Sequence[int], state: str) -> np.ndarray:
    """+1/-1 on the atoms of the ``magnetic`` types, 0 elsewhere (shape (N,)): ``state`` 'FM' or 'AFM' (layered
    along the third cell vector, :func:`layered_afm`); ValueError when the cell has no such order."""
    unit = {int(t): 1.0 for t in magnetic}
    if state == 'FM':
        return np.where(np.isin(cfg.types, list(unit)), 1.0, 0.0)
    if state == 'AFM':
        signs = layered_afm(cfg, unit)
        if signs is None:
            raise ValueError('the cell has a single layer of magnetic atoms: it has no layered AFM order')
        return signs
    raise ValueError(f'ordered state {state!r}: choose FM or AFM')


def scan_configurations(
    unit: Configuration,
    magnetic: Sequence[int],
    state: str,
    kind: str,
    values: Sequence,
    *,
    moment: float,
    scale: float = 1.0,
) -> list[Configuration]:
    """The ideal ``unit`` cell in an ordered ``state`` along one scan, each configuration's ``features['origin']``
    ``STATE:KIND:VALUE`` (read by :mod:`aiida_mmtp.mtp.properties.scans`).

    ``kind`` 'moment': the moment size of every atom of the ``magnetic`` types (mu_B) takes each of ``values``, the
    cell at lattice ratio ``scale``. 'scale': lattice ratios ``values`` at moment size ``moment``. 'strain': at
    (``moment``, ``scale``) the unstrained cell (origin ``STATE:strain:none:0``), then one per (component, e) of
    ``values`` (:func:`strained`). Non-magnetic atoms have moment 0.
    """
    signs = ordered_signs(unit, magnetic, state)

    def cell(factor: float, size: float, origin: str) -> Configuration:
        out = scaled(unit.clear_labels(), factor)
        out.moments = signs * size
        out.features = {'origin': f'{state}:{origin}'}
        return out

    if kind == 'moment':
        return [cell(scale, float(m), f'moment:{float(m):g}') for m in values]
    if kind == 'scale':
        return [cell(float(f), moment, f'scale:{float(f):g}') for f in values]
    if kind == 'strain':
        zero = cell(scale, moment, 'strain:none:0')
        out = [zero]
        for component, eps in values:
            new = strained(zero, component, float(eps))
            new.features = {'origin': f'{state}:strain:{component}:{float(eps):g}'}
            out.append(new)
        return out
    raise ValueError(f'scan kind {kind!r}: choose moment, scale or strain')
