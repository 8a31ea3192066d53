"""Read and write MLIP ``.mtp`` potential files (MLIP-2/3 and the magnetic MLIP-3 variant).

Our metadata (species names, level, energy mode) travels in ``potential_tag``
as one token ``mmtp:species=Cr,N;level=16;energy=symmetric``, which MLIP
reads and ignores. Per-species moment ranges that differ are written as
lists (``min_val = {-3.2, -0.1}``): MLIP-3 cannot read those, as it has one
range for all species; equal ranges are written as MLIP-3's scalars.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from .atomic import write_text_atomic
from .basis import BasisTables, basis_for_level
from .potential import Potential

__all__ = ['MtpFormatError', 'read_mtp', 'write_mtp', 'format_mtp']

_NUM = r'[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?'
_PAIR = re.compile(r'^(\d+)-(\d+)$')


class MtpFormatError(ValueError):
    """A malformed ``.mtp`` file; the message names the file and line."""


def _fmt(x: float) -> str:
    return f'{x:.16e}'


def _numbers(text: str, where: str) -> list[float]:
    body = text.strip()
    if not (body.startswith('{') and body.endswith('}')):
        raise MtpFormatError(f'{where}: expected a {{...}} list, got {body[:40]!r}')
    body = body[1:-1].replace('{', ' ').replace('}', ' ').replace(',', ' ')
    try:
        values = [float(t) for t in body.split()]
    except ValueError as exc:
        raise MtpFormatError(f'{where}: {exc}') from None
    if not all(math.isfinite(v) for v in values):
        raise MtpFormatError(f'{where}: non-finite number (nan or inf)')
    return values


def _parse_tag(tag: str) -> dict:
    out = {}
    tag = tag.strip()
    if not tag.startswith('mmtp:'):
        return out
    for item in tag[5:].split(';'):
        if '=' in item:
            k, v = item.split('=', 1)
            out[k.strip()] = v.strip()
    return out


def _infer_level(tables: BasisTables) -> int | None:
    n_basic = tables.basic.shape[0]
    for level in range(2, 23, 2):
        gen = basis_for_level(level)
        if gen.n_alpha == tables.n_alpha and gen.basic.shape[0] == n_basic:
            return level
        if gen.n_alpha > tables.n_alpha:
            break
    return None


def read_mtp(path: str | os.PathLike, species: list[str] | None = None) -> Potential:
    """Read an ``.mtp`` file. ``species`` names the types when the file does not."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise MtpFormatError(f'{path}: cannot read potential file: {exc}') from None
    return parse_mtp(lines, str(path), species)


def parse_mtp(lines: list[str], source: str = '<string>', species: list[str] | None = None) -> Potential:
    """Parse the lines of an ``.mtp`` file (see :func:`read_mtp`)."""
    if not lines or lines[0].strip() != 'MTP':
        raise MtpFormatError(f"{source}:1: not an MTP potential file (first line must be 'MTP')")
    values: dict[str, tuple[str, int]] = {}
    radial: dict[tuple[int, int], list[tuple[list[float], int]]] = {}
    current_pair = None
    in_radial = False
    n = 1
    while n < len(lines):
        raw = lines[n]
        lineno = n + 1
        n += 1
        text = raw.strip()
        if not text:
            continue
        where = f'{source}:{lineno}'
        if text == 'radial_coeffs':
            in_radial = True
            continue
        if in_radial:
            m = _PAIR.match(text)
            if m:
                current_pair = (int(m.group(1)), int(m.group(2)))
                radial[current_pair] = []
                continue
            if text.startswith('{'):
                if current_pair is None:
                    raise MtpFormatError(f'{where}: radial coefficients before a species pair line (e.g. 0-0)')
                radial[current_pair].append((_numbers(text, where), lineno))
                continue
            in_radial = False
        if '=' not in text:
            raise MtpFormatError(f"{where}: expected 'key = value', got {text[:60]!r}")
        key, value = (s.strip() for s in text.split('=', 1))
        # a {...} value may continue over several lines
        while value.count('{') > value.count('}') and n < len(lines):
            value += ' ' + lines[n].strip()
            n += 1
        values[key] = (value, lineno)

    def get(key: str, cast=str, required: bool = True, default=None):
        if key not in values:
            if required:
                raise MtpFormatError(f"{source}: missing '{key}'")
            return default
        value, lineno = values[key]
        try:
            out = cast(value)
        except ValueError:
            raise MtpFormatError(f'{source}:{lineno}: bad value for {key}: {value[:60]!r}') from None
        if isinstance(out, float) and not math.isfinite(out):
            raise MtpFormatError(f'{source}:{lineno}: non-finite value for {key}: {value[:60]!r}')
        return out

    def get_list(key: str) -> list[float]:
        if key not in values:
            raise MtpFormatError(f"{source}: missing '{key}'")
        value, lineno = values[key]
        return _numbers(value, f'{source}:{lineno} ({key})')

    rb_type = get('radial_basis_type')
    if rb_type != 'RBChebyshev':
        raise MtpFormatError(f"{source}: radial_basis_type {rb_type!r} is not supported (only 'RBChebyshev')")
    s = get('species_count', int)
    r_min = get('min_dist', float)
    r_cut = get('max_dist', float)
    n_phi = get('radial_basis_size', int)
    n_mu = get('radial_funcs_count', int)
    scaling = get('scaling', float, required=False, default=1.0)
    tag = _parse_tag(get('potential_tag', required=False, default=''))

    n_psi = 1
    mag_min = mag_max = None
    if 'magnetic_basis_type' in values:
        mb_type = get('magnetic_basis_type')
        if mb_type != 'BChebyshev':
            raise MtpFormatError(f"{source}: magnetic_basis_type {mb_type!r} is not supported (only 'BChebyshev')")
        n_psi = get('basis_size', int)
        mag_min = np.array(get_list('min_val') if '{' in values['min_val'][0] else [get('min_val', float)])
        mag_max = np.array(get_list('max_val') if '{' in values['max_val'][0] else [get('max_val', float)])
        for name, arr in (('min_val', mag_min), ('max_val', mag_max)):
            if arr.size not in (1, s):
                raise MtpFormatError(f'{source}:{values[name][1]}: {name} has {arr.size} values for {s} species')

    # basis tables
    basic = np.array(get_list('alpha_index_basic'), dtype=float)
    times = np.array(get_list('alpha_index_times'), dtype=float)
    mapping = np.array(get_list('alpha_moment_mapping'), dtype=float)
    n_basic = get('alpha_index_basic_count', int)
    n_times = get('alpha_index_times_count', int)
    n_alpha = get('alpha_scalar_moments', int)
    n_moments = get('alpha_moments_count', int)
    for name, arr, count, width in (
        ('alpha_index_basic', basic, n_basic, 4),
        ('alpha_index_times', times, n_times, 4),
        ('alpha_moment_mapping', mapping, n_alpha, 1),
    ):
        if arr.size != count * width:
            raise MtpFormatError(
                f'{source}:{values[name][1]}: {name} has {arr.size // width} entries, header says {count}'
            )
        if np.any(np.abs(arr) > 2**31 - 1) or np.any(arr != np.round(arr)):  # NaN compares unequal: refused too
            raise MtpFormatError(f'{source}:{values[name][1]}: {name} must hold integers')
    basic = basic.astype(np.int64).reshape(-1, 4)
    times = times.astype(np.int64).reshape(-1, 4)
    mapping = mapping.astype(np.int64)
    if basic.size and (basic[:, 0].max() >= n_mu or basic.min() < 0):
        raise MtpFormatError(f'{source}: alpha_index_basic refers to a radial function >= radial_funcs_count {n_mu}')
    if times.size and (times[:, [0, 1, 3]].max() >= n_moments or times[:, [0, 1, 3]].min() < 0):
        raise MtpFormatError(f'{source}: alpha_index_times refers to a moment outside 0..{n_moments - 1}')
    if mapping.size and (mapping.max() >= n_moments or mapping.min() < 0):
        raise MtpFormatError(f'{source}: alpha_moment_mapping refers to a moment outside 0..{n_moments - 1}')
    tables = BasisTables(basic=basic, times=times, mapping=mapping, n_moments=n_moments)

    # coefficients
    width = n_phi * n_psi * n_psi
    if 'species_coeffs' in values:  # trained
        species_coeffs = np.array(get_list('species_coeffs'))
        moment_coeffs = np.array(get_list('moment_coeffs'))
        if species_coeffs.size != s:
            raise MtpFormatError(f'{source}: species_coeffs has {species_coeffs.size} values for {s} species')
        if moment_coeffs.size != n_alpha:
            raise MtpFormatError(f'{source}: moment_coeffs has {moment_coeffs.size} values, need {n_alpha}')
        radial_coeffs = np.zeros((s, s, n_mu, width))
        for a in range(s):
            for b in range(s):
                rows = radial.get((a, b))
                if rows is None:
                    raise MtpFormatError(f'{source}: radial_coeffs has no block {a}-{b}')
                if len(rows) != n_mu:
                    raise MtpFormatError(f'{source}: radial_coeffs block {a}-{b} has {len(rows)} rows, need {n_mu}')
                for mu, (row, lineno) in enumerate(rows):
                    if len(row) != width:
                        raise MtpFormatError(
                            f'{source}:{lineno}: radial function has {len(row)} coefficients, need {width} '
                            f'(radial_basis_size {n_phi} x magnetic basis {n_psi}^2)'
                        )
                    radial_coeffs[a, b, mu] = row
    else:  # an untrained template: zero coefficients
        species_coeffs = np.zeros(s)
        moment_coeffs = np.zeros(n_alpha)
        radial_coeffs = np.zeros((s, s, n_mu, width))

    names = species
    if names is None and 'species' in tag:
        names = tag['species'].split(',')
    level = int(tag['level']) if 'level' in tag else _infer_level(tables)
    extra = {k: v for k, v in tag.items() if k not in ('species', 'level', 'energy')}
    try:
        return Potential(
            species_count=s,
            r_min=r_min,
            r_cut=r_cut,
            n_phi=n_phi,
            tables=tables,
            radial_coeffs=radial_coeffs,
            species_coeffs=species_coeffs,
            moment_coeffs=moment_coeffs,
            n_psi=n_psi,
            mag_min=mag_min,
            mag_max=mag_max,
            scaling=scaling,
            species=tuple(names) if names else None,
            level=level,
            symmetric=tag.get('energy') == 'symmetric',
            name=get('potential_name', required=False, default='MTP1m'),
            extra_tag=extra,
        )
    except ValueError as exc:
        raise MtpFormatError(f'{source}: {exc}') from None


def _braces(rows) -> str:
    return '{' + ', '.join('{' + ', '.join(str(int(v)) for v in row) + '}' for row in rows) + '}'


def format_mtp(pot: Potential) -> str:
    """The text of an ``.mtp`` file for ``pot`` (full double precision)."""
    tag = {}
    if pot.species:
        tag['species'] = ','.join(pot.species)
    if pot.level is not None:
        tag['level'] = str(pot.level)
    if pot.symmetric:
        tag['energy'] = 'symmetric'
    tag.update(pot.extra_tag)
    tag_text = ('mmtp:' + ';'.join(f'{k}={v}' for k, v in tag.items())) if tag else ''
    out = ['MTP', 'version = 1.1.0', f'potential_name = {pot.name}']
    if pot.scaling != 1.0:
        out.append(f'scaling = {_fmt(pot.scaling)}')
    out += [
        f'species_count = {pot.species_count}',
        f'potential_tag = {tag_text}',
        'radial_basis_type = RBChebyshev',
        f'\tmin_dist = {pot.r_min!r}',
        f'\tmax_dist = {pot.r_cut!r}',
        f'\tradial_basis_size = {pot.n_phi}',
    ]
    if pot.is_magnetic:
        out.append('magnetic_basis_type = BChebyshev')
        for key, arr in (('min_val', pot.mag_min), ('max_val', pot.mag_max)):
            if np.all(arr == arr[0]):
                out.append(f'\t{key} = {float(arr[0])!r}')
            else:
                out.append(f'\t{key} = {{' + ', '.join(repr(float(v)) for v in arr) + '}')
        out.append(f'\tbasis_size = {pot.n_psi}')
    out.append(f'\tradial_funcs_count = {pot.n_mu}')
    out.append('\tradial_coeffs')
    rc = pot.radial_coeffs.reshape(pot.species_count, pot.species_count, pot.n_mu, -1)
    for a in range(pot.species_count):
        for b in range(pot.species_count):
            out.append(f'\t\t{a}-{b}')
            for mu in range(pot.n_mu):
                out.append('\t\t\t{' + ', '.join(_fmt(v) for v in rc[a, b, mu]) + '}')
    t = pot.tables
    out += [
        f'alpha_moments_count = {t.n_moments}',
        f'alpha_index_basic_count = {t.basic.shape[0]}',
        f'alpha_index_basic = {_braces(t.basic)}',
        f'alpha_index_times_count = {t.times.shape[0]}',
        f'alpha_index_times = {_braces(t.times)}',
        f'alpha_scalar_moments = {t.n_alpha}',
        'alpha_moment_mapping = {' + ', '.join(str(int(v)) for v in t.mapping) + '}',
        'species_coeffs = {' + ', '.join(_fmt(v) for v in pot.species_coeffs) + '}',
        'moment_coeffs = {' + ', '.join(_fmt(v) for v in pot.moment_coeffs) + '}',
    ]
    return '\n'.join(out) + '\n'


def write_mtp(pot: Potential, path: str | os.PathLike) -> None:
    """Write ``pot`` to an ``.mtp`` file, atomically; a potential with non-finite parameters is refused."""
    if not np.all(np.isfinite(pot.get_params())):
        raise ValueError(f'{path}: not written: the potential has non-finite parameters')
    write_text_atomic(path, format_mtp(pot))
