"""Write the input of a collinear constrained-DFT run of ABINIT 9.6 (plain Python, no AiiDA).

The recipe verified on ABINIT 9.6.2 (shared/docs/cdft.md): ``nsppol 2``,
``nspden 2``, ``spinat 0 0 m_i`` with the signed target moment of each atom,
``constraint_kind`` per type (1 fixes value and sign, 0 leaves the species
free), ``ratsph`` per type (bohr; spheres must not overlap, which 9.6.2 does
not check), ``chkprim 0``, ``chksymtnons 0``, ``iscf 7`` (required with PAW), and for cells of more
than 8 atoms ``maxnsym`` 48 per atom (a supercell has more symmetries than ABINIT's default 384).
The cell is written as given: never reduced, atoms never reordered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..parsers.abinit_output import BOHR_A

__all__ = ['CdftSettings', 'check_sphere_overlap', 'needs_spin_flip', 'sphere_radii_problem', 'write_cdft_input']

#: The most point operations of a crystal: with at most one pure translation per atom, a cell of N atoms has at
#: most 48 N symmetries. ABINIT stops above its ``maxnsym`` (default 384: 8 atoms), e.g. on the 2x2x2 B1 supercell
#: (64 atoms, FM: 1536 symmetries), so larger cells get ``maxnsym 48 N``.
MAX_POINT_OPERATIONS = 48

FCC_SHIFTS = ((0.5, 0.5, 0.5), (0.5, 0.0, 0.0), (0.0, 0.5, 0.0), (0.0, 0.0, 0.5))


@dataclass
class CdftSettings:
    """Settings of one cDFT run. Energies in Ha unless the name says eV; radii in bohr.

    ``ratsph``: sphere radius per species; ``constrained``: species whose moments
    are fixed (others are free, their spinat only a starting guess); ``dftu``:
    species -> (l, U in eV, J in eV); ``shifts``: k-mesh shifts (default the
    four fcc shifts, symmetric for B1 cells).
    """

    ecut: float
    kmesh: tuple[int, int, int]
    ratsph: dict[str, float]
    constrained: Sequence[str]
    shifts: Sequence[tuple[float, float, float]] = FCC_SHIFTS
    occopt: int = 7
    tsmear: float = 0.01
    tolvrs: float = 1e-10
    nstep: int = 150
    iscf: int = 7
    magcon_lambda: float | None = None
    diemac: float | None = None
    diemix: float | None = None
    dftu: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    pawecutdg: float | None = None
    extra: dict[str, str] = field(default_factory=dict)


def needs_spin_flip(symbols: Sequence[str], moments: np.ndarray, constrained: Sequence[str]) -> bool:
    """True when the constrained targets sum to a negative number.

    ABINIT 9.6.2 traps such runs in a wrong, higher-energy state
    (tests/data/abinit/negative.abo); by spin-flip symmetry the run with all
    targets flipped gives the same energy, forces and stress and opposite
    moments and magnetic forces.
    """
    mask = np.array([s in constrained for s in symbols])
    return float(np.sum(np.asarray(moments)[mask])) < 0


def check_sphere_overlap(cell: np.ndarray, positions: np.ndarray, symbols: Sequence[str], ratsph: dict[str, float]):
    """Raise ValueError naming the first two atoms whose spheres (bohr) overlap, periodic images included."""
    missing = sorted({s for s in symbols} - set(ratsph))
    if missing:
        raise ValueError(f'no sphere radius (ratsph) for species {", ".join(missing)}')
    cell = np.asarray(cell, dtype=float)
    pos = np.asarray(positions, dtype=float)
    frac = pos @ np.linalg.inv(cell)
    radii = np.array([ratsph[s] * BOHR_A for s in symbols])
    reach = 2 * radii.max()
    n_img = np.ceil(reach * np.linalg.norm(np.linalg.inv(cell), axis=0)).astype(int) + 1
    images = np.array(np.meshgrid(*[np.arange(-n, n + 1) for n in n_img], indexing='ij')).reshape(3, -1).T
    for i in range(len(pos)):
        for j in range(i, len(pos)):
            d = (frac[j] - frac[i] - np.round(frac[j] - frac[i]) + images) @ cell
            r = np.linalg.norm(d, axis=1)
            if i == j:
                r = r[r > 1e-8]
            if r.size and r.min() < radii[i] + radii[j] - 1e-9:
                raise ValueError(
                    f'atomic spheres overlap: atom {i + 1} ({symbols[i]}, ratsph {ratsph[symbols[i]]} bohr) and atom '
                    f'{j + 1} ({symbols[j]}, ratsph {ratsph[symbols[j]]} bohr) are {r.min() / BOHR_A:.3f} bohr apart'
                )


def sphere_radii_problem(ratsph: dict[str, float], species: Sequence[str], r_min: float) -> str | None:
    """Why spheres of ``ratsph`` (bohr) of two different ``species`` could overlap at a distance the potential
    allows (>= ``r_min``, A), or None.

    Atoms of different species are the nearest neighbours that reach R_min (Cr-N in B1); a pair that the rule
    lets through but that overlaps anyway (e.g. two Cr atoms squeezed together) is refused per configuration.
    """
    known = [s for s in species if s in ratsph]
    for k, a in enumerate(known):
        for b in known[k + 1 :]:
            reach = (float(ratsph[a]) + float(ratsph[b])) * BOHR_A
            if reach > r_min + 1e-9:
                return (f'ratsph {a} {ratsph[a]} + {b} {ratsph[b]} bohr = {reach:.3f} A: their spheres overlap for '
                        f'{a}-{b} pairs between {r_min} A (the potential min_dist) and {reach:.3f} A, which MD '
                        'reaches and would select, only for the cDFT run to refuse them; lower ratsph or raise '
                        f'potential min_dist to at least {reach:.3f} A')  # fmt: skip
    return None


def _rows(values, fmt='{: .12f}') -> str:
    return '\n'.join('    ' + ' '.join(fmt.format(v) for v in row) for row in values)


def write_cdft_input(
    symbols: Sequence[str],
    cell: np.ndarray,
    positions: np.ndarray,
    moments: np.ndarray,
    pseudos: dict[str, str],
    znucl: dict[str, int],
    settings: CdftSettings,
) -> str:
    """The ABINIT input text. ``cell`` rows and ``positions`` in Angstrom; ``moments`` signed targets, mu_B.

    ``pseudos``: species -> pseudopotential file name (in the run folder);
    ``znucl``: species -> atomic number. Species are typed in order of first appearance.
    """
    symbols = list(symbols)
    moments = np.asarray(moments, dtype=float)
    if moments.shape != (len(symbols),):
        raise ValueError(f'{moments.size} moments given for {len(symbols)} atoms')
    species = list(dict.fromkeys(symbols))
    for name, table in (('pseudopotential', pseudos), ('atomic number', znucl)):
        missing = [s for s in species if s not in table]
        if missing:
            raise ValueError(f'no {name} for species {", ".join(missing)}')
    unknown = [s for s in settings.constrained if s not in species]
    if unknown:
        raise ValueError(f'constrained species {", ".join(unknown)} not in the structure')
    check_sphere_overlap(cell, positions, symbols, settings.ratsph)
    typat = [species.index(s) + 1 for s in symbols]
    xred = np.asarray(positions, dtype=float) @ np.linalg.inv(np.asarray(cell, dtype=float))
    lines = [
        '# constrained DFT, collinear (written by aiida-mmtp)',
        'chkprim 0',
        'chksymtnons 0',
        *([f'maxnsym {MAX_POINT_OPERATIONS * len(symbols)}'] if MAX_POINT_OPERATIONS * len(symbols) > 384 else []),
        f'natom {len(symbols)}',
        f'ntypat {len(species)}',
        'znucl ' + ' '.join(str(znucl[s]) for s in species),
        'typat ' + ' '.join(map(str, typat)),
        'acell 3*1.0 angstrom',
        'rprim',
        _rows(np.asarray(cell, dtype=float)),
        'xred',
        _rows(xred),
        'nsppol 2',
        'nspden 2',
        'spinat',
        _rows([(0.0, 0.0, m) for m in moments], '{: .10f}'),
        'constraint_kind ' + ' '.join('1' if s in settings.constrained else '0' for s in species),
        'ratsph ' + ' '.join(f'{settings.ratsph[s]:.6f}' for s in species),
        'ratsm 0.05',
        f'ecut {settings.ecut}',
        f'occopt {settings.occopt}',
        f'tsmear {settings.tsmear}',
        'kptopt 1',
        'ngkpt ' + ' '.join(str(int(k)) for k in settings.kmesh),
        f'nshiftk {len(settings.shifts)}',
        'shiftk',
        _rows(settings.shifts, '{:.4f}'),
        f'iscf {settings.iscf}',
        f'tolvrs {settings.tolvrs:.3e}',
        f'nstep {settings.nstep}',
        'optstress 1',
        'prtwf 0',
        'prtden 0',
        'prteig 0',
        'prtebands 0',
    ]
    if settings.magcon_lambda is not None:
        lines.append(f'magcon_lambda {settings.magcon_lambda}')
    if settings.diemac is not None:
        lines.append(f'diemac {settings.diemac}')
    if settings.diemix is not None:
        lines.append(f'diemix {settings.diemix}')
    if settings.dftu:
        lines += [
            'usepawu 1',
            'lpawu ' + ' '.join(str(settings.dftu[s][0]) if s in settings.dftu else '-1' for s in species),
            'upawu ' + ' '.join(f'{settings.dftu[s][1]}' if s in settings.dftu else '0.0' for s in species) + ' eV',
            'jpawu ' + ' '.join(f'{settings.dftu[s][2]}' if s in settings.dftu else '0.0' for s in species) + ' eV',
        ]
    if settings.pawecutdg is not None:
        lines.append(f'pawecutdg {settings.pawecutdg}')
    lines += [f'{k} {v}' for k, v in settings.extra.items()]
    lines += ['pp_dirpath "./"', 'pseudos "' + ', '.join(pseudos[s] for s in species) + '"']
    return '\n'.join(lines) + '\n'
