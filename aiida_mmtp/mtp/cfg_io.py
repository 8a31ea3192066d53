"""Read and write MLIP ``.cfg`` configuration files (with the magnetic columns).

``AtomData`` columns understood: ``id type cartes_x cartes_y cartes_z``
(or ``direct1 direct2 direct3``), ``fx fy fz``, ``magmom_x magmom_y
magmom_z`` (collinear: the moment is ``magmom_x``), ``en_der_mx en_der_my
en_der_mz`` (= +dE/dm, eV/mu_B: the magnetic force is its negative) and
``nbh_grades``. ``PlusStress`` is the virial in eV (ASE stress = -PlusStress /
volume). Numbers in plain and scientific notation are accepted; numbers are
written with 17 significant digits, so a write-read cycle is exact.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .atomic import atomic_output
from .configuration import Configuration

__all__ = ['CfgFormatError', 'read_cfg', 'iter_cfg', 'write_cfg', 'format_cfg']

_STRESS_KEYS = ('xx', 'yy', 'zz', 'yz', 'xz', 'xy')


class CfgFormatError(ValueError):
    """A malformed ``.cfg`` file; the message names the file and line."""


def _floats(tokens: list[str], where: str, count: int) -> list[float]:
    if len(tokens) != count:
        raise CfgFormatError(f'{where}: expected {count} numbers, got {len(tokens)}')
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise CfgFormatError(f'{where}: not a number in {" ".join(tokens)!r}') from None
    if not all(math.isfinite(v) for v in values):
        raise CfgFormatError(f'{where}: non-finite number (nan or inf) in {" ".join(tokens)[:60]!r}')
    return values


def iter_cfg(path: str | os.PathLike) -> Iterator[Configuration]:
    """Yield the configurations of a ``.cfg`` file one by one."""
    source = str(path)
    try:
        handle = open(path)
    except OSError as exc:
        raise CfgFormatError(f'{source}: cannot read configuration file: {exc}') from None
    with handle:
        lines = enumerate(handle, start=1)
        for lineno, raw in lines:
            text = raw.strip()
            if not text:
                continue
            if text != 'BEGIN_CFG':
                raise CfgFormatError(f'{source}:{lineno}: expected BEGIN_CFG, got {text[:60]!r}')
            yield _parse_one(lines, source, lineno)


def read_cfg(path: str | os.PathLike) -> list[Configuration]:
    """All configurations of a ``.cfg`` file."""
    return list(iter_cfg(path))


def _parse_one(lines, source: str, begin: int) -> Configuration:
    size = None
    cell = None
    data = None
    energy = None
    virial = None
    features: dict[str, str] = {}
    for lineno, raw in lines:
        text = raw.strip()
        where = f'{source}:{lineno}'
        if not text:
            continue
        head = text.split()[0].rstrip(':')
        if head == 'END_CFG':
            break
        if head == 'Size':
            _, tok = next(lines, (lineno, ''))
            try:
                size = int(tok.split()[0])
            except (ValueError, IndexError):
                raise CfgFormatError(f'{where}: Size must be followed by the number of atoms') from None
            if size < 1:
                raise CfgFormatError(f'{where}: Size must be a positive number of atoms, got {size}')
        elif head == 'Supercell':
            rows = []
            for _ in range(3):
                ln, row = next(lines, (lineno, ''))
                if row.strip().split()[:1] in (['AtomData:'], ['AtomData'], ['Energy']):
                    raise CfgFormatError(f'{source}:{ln}: Supercell needs three lattice vectors')
                rows.append(_floats(row.split(), f'{source}:{ln}', 3))
            cell = np.array(rows)
        elif head == 'AtomData':
            if size is None:
                raise CfgFormatError(f'{where}: AtomData before Size')
            columns = text.split(':', 1)[1].split() if ':' in text else text.split()[1:]
            rows = []
            for _ in range(size):
                ln, row = next(lines, (lineno, ''))
                rows.append(_floats(row.split(), f'{source}:{ln}', len(columns)))
            data = _atom_data(columns, np.array(rows).reshape(size, len(columns)), cell, where)
        elif head == 'Energy':
            ln, row = next(lines, (lineno, ''))
            energy = _floats(row.split(), f'{source}:{ln}', 1)[0]
        elif head == 'PlusStress':
            keys = text.split(':', 1)[1].split() if ':' in text else list(_STRESS_KEYS)
            if tuple(keys) != _STRESS_KEYS:
                raise CfgFormatError(f'{where}: PlusStress columns must be {" ".join(_STRESS_KEYS)}')
            ln, row = next(lines, (lineno, ''))
            virial = np.array(_floats(row.split(), f'{source}:{ln}', 6))
        elif head == 'Stress':
            raise CfgFormatError(f"{where}: the old 'Stress' keyword is not accepted; use 'PlusStress' (virial, eV)")
        elif head == 'Feature':
            parts = text.split(None, 2)
            if len(parts) < 2:
                raise CfgFormatError(f'{where}: Feature needs a name')
            features[parts[1]] = parts[2] if len(parts) > 2 else ''
        else:
            raise CfgFormatError(f'{where}: unknown line {text[:60]!r}')
    else:
        raise CfgFormatError(f'{source}:{begin}: configuration has no END_CFG')
    if data is None:
        raise CfgFormatError(f'{source}:{begin}: configuration has no AtomData')
    return Configuration(cell=cell, energy=energy, virial=virial, features=features, **data)


_MAX_TYPE = 2**31 - 1  # MLIP stores species types as C int


def _atom_data(columns: list[str], table: np.ndarray, cell, where: str) -> dict:
    col = {name: k for k, name in enumerate(columns)}

    def take(names):
        if all(n in col for n in names):
            return table[:, [col[n] for n in names]]
        if any(n in col for n in names):
            raise CfgFormatError(f'{where}: AtomData needs all of {" ".join(names)} or none')
        return None

    if 'type' not in col:
        raise CfgFormatError(f"{where}: AtomData has no 'type' column")
    types = table[:, col['type']]
    if np.any(types != np.round(types)) or np.any(types < 0) or np.any(types > _MAX_TYPE):
        raise CfgFormatError(f'{where}: species types must be integers from 0 to {_MAX_TYPE}')
    known = {
        'id',
        'type',
        'cartes_x',
        'cartes_y',
        'cartes_z',
        'direct1',
        'direct2',
        'direct3',
        'fx',
        'fy',
        'fz',
        'magmom_x',
        'magmom_y',
        'magmom_z',
        'en_der_mx',
        'en_der_my',
        'en_der_mz',
        'nbh_grades',
    }
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise CfgFormatError(f'{where}: unknown AtomData column(s) {", ".join(unknown)}')
    positions = take(['cartes_x', 'cartes_y', 'cartes_z'])
    direct = take(['direct1', 'direct2', 'direct3'])
    if positions is None:
        if direct is None:
            raise CfgFormatError(f'{where}: AtomData has no positions (cartes_* or direct*)')
        if cell is None:
            raise CfgFormatError(f'{where}: direct coordinates need a Supercell')
        positions = direct @ cell
    out = {'positions': positions, 'types': types.astype(np.int64)}
    forces = take(['fx', 'fy', 'fz'])
    if forces is not None:
        out['forces'] = forces
    mag = take(['magmom_x', 'magmom_y', 'magmom_z'])
    if mag is not None:
        if np.any(mag[:, 1:] != 0):
            raise CfgFormatError(f'{where}: only collinear moments (magmom_x) are supported; magmom_y/z must be 0')
        out['moments'] = mag[:, 0].copy()
    der = take(['en_der_mx', 'en_der_my', 'en_der_mz'])
    if der is not None:
        out['mag_forces'] = -der[:, 0]
    if 'nbh_grades' in col:
        out['grades'] = table[:, col['nbh_grades']].copy()
    return out


def _f(x: float) -> str:
    return f'{x: .16e}'


def format_cfg(cfg: Configuration) -> str:
    """The ``.cfg`` text of one configuration."""
    out = ['BEGIN_CFG', ' Size', f'    {cfg.natoms}']
    if cfg.cell is not None:
        out.append(' Supercell')
        out += ['   ' + ' '.join(_f(v) for v in row) for row in cfg.cell]
    columns = ['id', 'type', 'cartes_x', 'cartes_y', 'cartes_z']
    blocks = [np.arange(1, cfg.natoms + 1)[:, None], cfg.types[:, None], cfg.positions]
    if cfg.forces is not None:
        columns += ['fx', 'fy', 'fz']
        blocks.append(cfg.forces)
    if cfg.moments is not None:
        columns += ['magmom_x', 'magmom_y', 'magmom_z']
        blocks.append(np.column_stack([cfg.moments, np.zeros(cfg.natoms), np.zeros(cfg.natoms)]))
    if cfg.mag_forces is not None:
        columns += ['en_der_mx', 'en_der_my', 'en_der_mz']
        blocks.append(np.column_stack([-cfg.mag_forces, np.zeros(cfg.natoms), np.zeros(cfg.natoms)]))
    if cfg.grades is not None:
        columns.append('nbh_grades')
        blocks.append(cfg.grades[:, None])
    out.append(' AtomData:  ' + ' '.join(columns))
    table = np.hstack([np.asarray(b, dtype=float) for b in blocks])
    for row in table:
        out.append(f'   {int(row[0]):6d} {int(row[1]):4d} ' + ' '.join(_f(v) for v in row[2:]))
    if cfg.energy is not None:
        out += [' Energy', '   ' + _f(cfg.energy)]
    if cfg.virial is not None:
        out += [' PlusStress:  ' + ' '.join(_STRESS_KEYS), '   ' + ' '.join(_f(v) for v in cfg.virial)]
    for key, value in cfg.features.items():
        out.append(f' Feature   {key}\t{value}')
    out.append('END_CFG')
    return '\n'.join(out) + '\n\n'


def write_cfg(configs: Iterable[Configuration] | Configuration, path: str | os.PathLike, append: bool = False) -> None:
    """Write configurations to a ``.cfg`` file, atomically (``append`` adds to an existing one in place)."""
    if isinstance(configs, Configuration):
        configs = [configs]
    if append:
        with Path(path).open('a') as handle:
            for cfg in configs:
                handle.write(format_cfg(cfg))
        return
    with atomic_output(path) as handle:
        for cfg in configs:
            handle.write(format_cfg(cfg))
