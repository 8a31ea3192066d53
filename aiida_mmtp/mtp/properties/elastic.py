"""Elastic constants from finite strains: stress-strain and energy-strain, Born-Huang stability, Table II.

Voigt order 1..6 = xx, yy, zz, yz, xz, xy with engineering shear strains
(e_4 = 2 eps_yz); ASE stress (sigma = dE/de / V, positive in tension), so
C_IJ = d sigma_I / d e_J and E(e) / V0 = E0 / V0 + sigma0 . e + e . C . e / 2.
Every strained cell is deformed homogeneously (r -> (1 + eps) r), and the
calculator re-equilibrates the moments of every state at each strain.
Results in GPa.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from ..configuration import EV_PER_A3_IN_GPA

__all__ = [
    'PAPER_TABLE_II',
    'born_stability',
    'comparison_rows',
    'crystal_system',
    'elastic_constants',
    'strain_matrix',
]

#: Kotykhov et al., Table II (GPa): C11 C22 C33 C12 C13 C23 C44 C55 C66.
PAPER_TABLE_II = {
    ('FM', 'mMTP'): [594, 594, 594, 100, 100, 100, 188, 188, 188],
    ('FM', 'DFT (paper)'): [573, 573, 573, 108, 108, 108, 164, 164, 164],
    ('FM', 'DFT [18]'): [589, 589, 589, 128, 128, 128, 162, 162, 162],
    ('AFM', 'mMTP'): [620, 620, 708, 113, 97, 97, 158, 158, 164],
    ('AFM', 'DFT (paper)'): [680, 680, 709, 100, 62, 62, 122, 122, 177],
    ('AFM', 'DFT [18]'): [696, 696, 722, 113, 76, 76, 124, 124, 174],
    ('PM', 'mMTP'): [645, 645, 645, 98, 98, 98, 160, 160, 160],
    ('PM', 'DFT [18]'): [649, 649, 649, 99, 99, 99, 145, 145, 145],
}
TABLE_COLUMNS = ('C11', 'C22', 'C33', 'C12', 'C13', 'C23', 'C44', 'C55', 'C66')
_TABLE_INDEX = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2), (3, 3), (4, 4), (5, 5))


def strain_matrix(voigt: np.ndarray) -> np.ndarray:
    """The symmetric 3x3 strain of a Voigt vector (6,) with engineering shears."""
    e = np.asarray(voigt, dtype=float)
    return np.array([[e[0], e[5] / 2, e[4] / 2], [e[5] / 2, e[1], e[3] / 2], [e[4] / 2, e[3] / 2, e[2]]])


def _strained(atoms: Atoms, voigt: np.ndarray) -> Atoms:
    deform = np.eye(3) + strain_matrix(voigt)
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ deform.T, scale_atoms=True)
    out.calc = atoms.calc
    return out


def _fit(x: np.ndarray, y: np.ndarray, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares polynomial coefficients (lowest order first) of y(x), with their standard errors."""
    design = np.vander(x, degree + 1, increasing=True)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    dof = len(x) - degree - 1
    resid = y - design @ coef
    if dof <= 0:
        return coef, np.zeros_like(coef)
    cov = np.linalg.inv(design.T @ design) * float(resid @ resid) / dof
    return coef, np.sqrt(np.clip(np.diag(cov), 0.0, None))


def _state_sem(deltas: np.ndarray, per_state: list, degree: int) -> np.ndarray | None:
    """Standard error (6x6, GPa) of a state-averaged stress-strain C from the spread of the per-state C.

    ``per_state[j][k]``: the (K, 6) stresses (eV/A^3) of the K states at strain ``deltas[k]`` of component j.
    The average's C is the mean of the per-state C (the fit is linear), so its standard error is their standard
    deviation over sqrt(K). None for a single state or a calculator without per-state results.
    """
    if any(s is None for row in per_state for s in row) or np.shape(per_state[0][0])[0] < 2:
        return None
    stress = np.array(per_state) * EV_PER_A3_IN_GPA  # (6 strains j, n deltas, K states, 6 components i)
    design = np.vander(deltas, degree + 1, increasing=True)
    slopes = np.linalg.lstsq(design, stress.transpose(1, 0, 2, 3).reshape(len(deltas), -1), rcond=None)[0][1]
    c = slopes.reshape(6, -1, 6).transpose(1, 2, 0)  # (K, i, j)
    c = 0.5 * (c + c.transpose(0, 2, 1))
    return np.std(c, axis=0, ddof=1) / np.sqrt(len(c))


def elastic_constants(atoms: Atoms, magnitudes=(0.005, 0.01), method: str = 'both') -> dict:
    """The 6x6 elastic matrix of the (relaxed) ``atoms`` with its calculator, in GPa.

    ``magnitudes``: strain sizes, each applied with both signs; with three or more the fits take the next
    odd (stress: cubic) and even (energy: quartic) terms too. ``method``: 'stress' (stress-strain:
    6 strains x 2 signs x len(magnitudes) cells), 'energy' (energy-strain: 21 strain patterns, e_I and
    e_I + e_J) or 'both'. Returns, per method, ``C`` (6x6, symmetrised for stress-strain), ``error``
    (6x6 standard errors of the fitted slopes/curvatures), and for stress-strain ``asymmetry``
    (max |C_IJ - C_JI|) and, for a state average (a :class:`StateAverageCalculator` of K > 1 states), ``state_sem``
    (6x6: the standard error of the average over the states), plus the reference energy, stress and volume.
    """
    if method not in ('stress', 'energy', 'both'):
        raise ValueError(f"method must be 'stress', 'energy' or 'both', got {method!r}")
    mags = np.asarray(sorted({abs(float(m)) for m in magnitudes}), dtype=float)
    if len(mags) < 1 or np.any(mags <= 0) or np.any(mags > 0.05):
        raise ValueError(f'strain magnitudes must lie in (0, 0.05], got {list(magnitudes)}')
    deltas = np.concatenate([-mags[::-1], mags])
    volume = atoms.get_volume()
    energy0 = atoms.get_potential_energy()
    out = {
        'volume': volume,
        'energy': energy0,
        'stress_GPa': (atoms.get_stress() * EV_PER_A3_IN_GPA).tolist(),
        'strains': deltas.tolist(),
    }
    if method in ('stress', 'both'):
        degree = 3 if len(deltas) >= 6 else 2
        c = np.zeros((6, 6))
        err = np.zeros((6, 6))
        per_state = []  # (K, 6) stresses of every state at each strain, when the calculator averages states
        for j in range(6):
            stresses, states = [], []
            for d in deltas:
                e = np.zeros(6)
                e[j] = d
                stresses.append(_strained(atoms, e).get_stress())
                states.append(getattr(atoms.calc, 'per_state', {}).get('stress'))
            stresses = np.array(stresses) * EV_PER_A3_IN_GPA
            for i in range(6):
                coef, se = _fit(deltas, stresses[:, i], degree)
                c[i, j], err[i, j] = coef[1], se[1]
            per_state.append(states)
        out['stress_strain'] = {
            'C': (0.5 * (c + c.T)).tolist(),
            'C_raw': c.tolist(),
            'error': err.tolist(),
            'asymmetry': float(np.abs(c - c.T).max()),
        }
        sem = _state_sem(deltas, per_state, degree)
        if sem is not None:
            out['stress_strain']['state_sem'] = sem.tolist()
    if method in ('energy', 'both'):
        x = np.concatenate([deltas, [0.0]])
        curvature, curv_err = {}, {}
        patterns = [(i,) for i in range(6)] + [(i, j) for i in range(6) for j in range(i + 1, 6)]
        for pattern in patterns:
            energies = []
            for d in deltas:
                e = np.zeros(6)
                e[list(pattern)] = d
                energies.append(_strained(atoms, e).get_potential_energy())
            y = (np.array(energies + [energy0]) - energy0) / volume * EV_PER_A3_IN_GPA
            coef, se = _fit(x, y, 4 if len(x) >= 7 else 3)
            curvature[pattern], curv_err[pattern] = 2 * coef[2], 2 * se[2]
        c = np.zeros((6, 6))
        err = np.zeros((6, 6))
        for i in range(6):
            c[i, i], err[i, i] = curvature[(i,)], curv_err[(i,)]
        for i in range(6):
            for j in range(i + 1, 6):
                c[i, j] = c[j, i] = 0.5 * (curvature[(i, j)] - c[i, i] - c[j, j])
                err[i, j] = err[j, i] = 0.5 * np.sqrt(curv_err[(i, j)] ** 2 + err[i, i] ** 2 + err[j, j] ** 2)
        out['energy_strain'] = {'C': c.tolist(), 'error': err.tolist()}
    return out


def crystal_system(atoms: Atoms, moments: np.ndarray | None = None, symprec: float = 1e-3) -> tuple[str, str]:
    """(crystal system, space group symbol) of ``atoms``; collinear ``moments`` (N,) lower the symmetry.

    Moments enter as colours: atoms of one species with opposite signs count as different.
    """
    import spglib

    numbers = atoms.get_atomic_numbers() * 3
    if moments is not None:
        numbers = numbers + np.sign(np.round(np.asarray(moments), 1)).astype(int) + 1
    cell = (atoms.cell.array, atoms.get_scaled_positions(), numbers)
    dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
    number = dataset.number
    for bound, name in (
        (2, 'triclinic'),
        (15, 'monoclinic'),
        (74, 'orthorhombic'),
        (142, 'tetragonal'),
        (167, 'trigonal'),
        (194, 'hexagonal'),
        (230, 'cubic'),
    ):
        if number <= bound:
            return name, dataset.international
    raise ValueError(f'space group number {number} out of range')


def born_stability(c: np.ndarray, system: str) -> dict:
    """Born-Huang stability of the elastic matrix ``c`` (6x6, GPa) for a crystal ``system``.

    The necessary and sufficient condition is that ``c`` is positive definite (Mouhat and Coudert,
    PRB 90, 224104); for cubic and tetragonal (I) crystals the equivalent textbook inequalities are
    listed too. Returns ``stable``, the smallest eigenvalue and each condition with its value.
    """
    c = np.asarray(c, dtype=float)
    eig = np.linalg.eigvalsh(0.5 * (c + c.T))
    conditions = [('all eigenvalues of C > 0', float(eig.min()))]
    if system == 'cubic':
        conditions += [
            ('C11 - C12 > 0', c[0, 0] - c[0, 1]),
            ('C11 + 2 C12 > 0', c[0, 0] + 2 * c[0, 1]),
            ('C44 > 0', c[3, 3]),
        ]
    elif system == 'tetragonal':
        conditions += [
            ('C11 - |C12| > 0', c[0, 0] - abs(c[0, 1])),
            ('C33 (C11 + C12) - 2 C13^2 > 0', c[2, 2] * (c[0, 0] + c[0, 1]) - 2 * c[0, 2] ** 2),
            ('C44 > 0', c[3, 3]),
            ('C66 > 0', c[5, 5]),
        ]
    checks = [{'condition': text, 'value': float(value), 'satisfied': bool(value > 0)} for text, value in conditions]
    return {
        'system': system,
        'stable': all(ch['satisfied'] for ch in checks),
        'min_eigenvalue': float(eig.min()),
        'conditions': checks,
    }


def table_values(c: np.ndarray) -> list[float]:
    """C11 C22 C33 C12 C13 C23 C44 C55 C66 of a 6x6 matrix (Table II's columns)."""
    c = np.asarray(c, dtype=float)
    return [float(c[i, j]) for i, j in _TABLE_INDEX]


def comparison_rows(results: dict[str, np.ndarray]) -> list[dict]:
    """Table II rows: ours (``results``: state kind -> 6x6 C, GPa) next to the paper's for the same state."""
    rows = []
    for state, c in results.items():
        rows.append({'state': state, 'method': 'this potential', **dict(zip(TABLE_COLUMNS, table_values(c)))})
        for (paper_state, method), values in PAPER_TABLE_II.items():
            if paper_state == state:
                rows.append({'state': state, 'method': f'paper: {method}', **dict(zip(TABLE_COLUMNS, values))})
    return rows
