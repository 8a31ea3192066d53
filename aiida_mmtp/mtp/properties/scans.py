"""Same-fidelity check of a potential: E(m), E(V) and strain scans of the ordered states, analysed alike for
the reference labels (constrained DFT at a campaign's settings) and for the potential on the same cells.

Each configuration of a scan carries an origin ``STATE:KIND:VALUE`` (:func:`~aiida_mmtp.mtp.structures.
scan_configurations`). For each ordered state (FM, layered AFM):

- ``moment``: every magnetic atom at moment size m with the state's signs, ideal cell. The equilibrium moment
  m0 is where the magnetic force along the moments, T_par = mean over magnetic atoms of sign(m_i) T_i
  (eV/mu_B; T = -dE/dm), changes sign from + to - as m grows (linear interpolation).
- ``scale``: the ideal cell scaled isotropically, moments at m0. A Birch-Murnaghan fit (``ase.eos``) gives V0,
  E0 per atom, B (GPa) and a0 (A; the first cell vector's length at V0). The pressure of the stresses,
  P = -tr(sigma)/3, is compared with -dE/dV of the energies between neighbouring volumes: their mean
  difference (``pressure_stress_minus_energy_GPa``) is the stress a basis-set (Pulay) error adds, 0 for a
  potential, whose stress is the derivative of its energy.
- ``strain``: the cell at (m0, a0), unstrained (``strain:none:0``) and under +-e of Voigt components (xx ... xy,
  engineering shears): C_IJ = (sigma_I(+e_J) - sigma_I(-e_J)) / 2e (ASE stress, GPa), and from the energies
  C_JJ = (E(+e) + E(-e) - 2 E(0)) / (V e^2).

The FM-AFM energy difference is E0(FM) - E0(AFM) per atom, each state at its own m0 and V0 (meV/atom).
:func:`compare` sets the potential's numbers beside the reference's, with the tolerances of
:data:`TOLERANCES`. Units: eV, A, mu_B, GPa.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..configuration import EV_PER_A3_IN_GPA, Configuration
from ..structures import VOIGT_COMPONENTS

__all__ = [
    'SCAN_KINDS',
    'TOLERANCES',
    'analyse_scans',
    'compare',
    'elastic_from_strains',
    'equation_of_state',
    'moment_minimum',
    'parse_origin',
    'run_scans',
]

SCAN_KINDS = ('moment', 'scale', 'strain')

#: Largest relative differences of the potential from the reference that pass (issue 11's targets). The
#: equilibrium moment is the potential's moment after equilibration at the reference's (m0, a0) cell.
TOLERANCES = {
    'moment_muB': 0.10,
    'a0_A': 0.01,
    'B_GPa': 0.15,
    'C11_GPa': 0.15,
    'C12_GPa': 0.15,
    'C44_GPa': 0.15,
    'E_FM_minus_AFM_meV_per_atom': 0.20,
}
#: Table entries of the strain columns: name -> (strained component, stress component).
_ELASTIC = {
    'C11_GPa': ('xx', 0),
    'C12_GPa': ('xx', 1),
    'C13_GPa': ('xx', 2),
    'C33_GPa': ('zz', 2),
    'C44_GPa': ('yz', 3),
    'C66_GPa': ('xy', 5),
}


def parse_origin(origin: str) -> tuple[str, str, str | None, float]:
    """(state, kind, strain component or None, value) of ``STATE:KIND:VALUE`` or ``STATE:strain:COMP:VALUE``."""
    parts = origin.split(':')
    if len(parts) == 3 and parts[1] in ('moment', 'scale'):
        return parts[0], parts[1], None, float(parts[2])
    if len(parts) == 4 and parts[1] == 'strain' and (parts[2] in VOIGT_COMPONENTS or parts[2] == 'none'):
        return parts[0], 'strain', parts[2], float(parts[3])
    raise ValueError(f'not a scan origin: {origin!r} (STATE:moment:M, STATE:scale:S or STATE:strain:COMP:E)')


def _magnetic(cfg: Configuration) -> np.ndarray:
    return np.flatnonzero(np.abs(cfg.moments) > 1e-3) if cfg.moments is not None else np.zeros(0, dtype=int)


def moment_minimum(m: np.ndarray, t_par: np.ndarray) -> dict:
    """The equilibrium moment of an E(m) scan: ``m`` (K,) moment sizes (mu_B), ``t_par`` (K,) magnetic forces along
    the moments (eV/mu_B). ``m0_muB`` is None when T_par does not change sign from + to - in the range; ``where``
    then says on which side the minimum lies."""
    order = np.argsort(m)
    m, t = np.asarray(m, dtype=float)[order], np.asarray(t_par, dtype=float)[order]
    for k in range(len(m) - 1):
        if t[k] > 0.0 >= t[k + 1]:
            m0 = m[k] + t[k] * (m[k + 1] - m[k]) / (t[k] - t[k + 1])
            return {'m0_muB': float(m0), 'where': 'inside', 'points': len(m)}
    where = 'above the scanned range' if t[-1] > 0 else 'below the scanned range'
    return {'m0_muB': None, 'where': where, 'points': len(m)}


def equation_of_state(volumes: np.ndarray, energies: np.ndarray, pressures: np.ndarray) -> dict:
    """E(V) fit: ``volumes`` (K,) A^3/atom, ``energies`` (K,) eV/atom, ``pressures`` (K,) GPa of the stresses.

    Birch-Murnaghan (``ase.eos``); where that fit does not converge, a cubic polynomial; where neither has a minimum
    within half the scanned range of the scan, V0 and B are None and E0 is the lowest scanned energy (``fit`` says
    which). Returns V0 (A^3/atom), E0 (eV/atom),
    B (GPa), whether V0 lies inside the scanned volumes, and the mean difference between the stress pressure and
    -dE/dV between neighbouring volumes (GPa)."""
    from ase.eos import EquationOfState

    order = np.argsort(volumes)
    v, e, p = (np.asarray(x, dtype=float)[order] for x in (volumes, energies, pressures))
    if len(v) < 5:
        raise ValueError(f'an equation of state needs at least 5 volumes, got {len(v)}')
    slope = -np.diff(e) / np.diff(v) * EV_PER_A3_IN_GPA
    out = {'pressure_stress_minus_energy_GPa': float(np.mean(0.5 * (p[1:] + p[:-1]) - slope))}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # scipy's notes on a fit far from the BM form: judged below
            v0, e0, b = EquationOfState(v, e, eos='birchmurnaghan').fit(warn=False)
        fit = 'birch-murnaghan'
    except (RuntimeError, ValueError):  # scipy's curve_fit found no parameters: E(V) is far from a BM form
        v0, e0, b, fit = _cubic_minimum(v, e)
    margin = 0.5 * (v[-1] - v[0])  # a minimum beyond half the scanned range outside it is not a measurement
    if v0 is None or not np.isfinite(v0) or not v[0] - margin <= v0 <= v[-1] + margin:
        side = 'below' if np.argmin(e) == 0 else 'above' if np.argmin(e) == len(e) - 1 else 'inside'
        v0, e0, b, fit = None, float(e.min()), None, f'none (no E(V) minimum near the scan; lowest point {side})'
    out.update({'V0_A3_per_atom': None if v0 is None else float(v0), 'E0_eV_per_atom': float(e0),
                'B_GPa': None if b is None else float(b * EV_PER_A3_IN_GPA), 'fit': fit,
                'bracketed': v0 is not None and bool(v[0] < v0 < v[-1])})  # fmt: skip
    return out


def _cubic_minimum(v: np.ndarray, e: np.ndarray) -> tuple:
    """(V0, E0, B in eV/A^3, 'cubic') of a cubic E(V) fit's minimum, or (None, ...) when it has none."""
    poly = np.polynomial.Polynomial.fit(v, e, 3).convert()
    d1, d2 = poly.deriv(), poly.deriv(2)
    minima = [r.real for r in d1.roots() if abs(r.imag) < 1e-12 and d2(r.real) > 0]
    if not minima:
        return None, None, None, 'cubic'
    v0 = min(minima, key=lambda r: abs(r - v.mean()))
    return v0, poly(v0), v0 * d2(v0), 'cubic'


def elastic_from_strains(strained: dict[tuple[str, float], Configuration], zero: Configuration) -> dict:
    """Elastic constants (GPa) by central differences: ``strained`` maps (component, +-e) to a labelled
    configuration, ``zero`` is the unstrained one. Stress columns C_IJ and, per component, C_JJ from the energy
    curvature; the residual pressure of the unstrained cell."""
    columns, from_energy = {}, {}
    for comp in VOIGT_COMPONENTS:
        eps = sorted({e for c, e in strained if c == comp and e > 0 and (c, -e) in strained})
        if not eps:
            continue
        e = eps[0]
        plus, minus = strained[(comp, e)], strained[(comp, -e)]
        columns[comp] = ((plus.stress - minus.stress) / (2 * e) * EV_PER_A3_IN_GPA).tolist()
        curvature = (plus.energy + minus.energy - 2 * zero.energy) / (zero.volume * e**2)
        from_energy[comp] = float(curvature * EV_PER_A3_IN_GPA)
    out = {name: columns[comp][i] for name, (comp, i) in _ELASTIC.items() if comp in columns}
    out['from_energy_GPa'] = from_energy
    out['stress_columns_GPa'] = columns
    out['pressure_GPa'] = float(-np.sum(zero.stress[:3]) / 3 * EV_PER_A3_IN_GPA)
    return out


def analyse_scans(configs: list[Configuration], origins: list[str]) -> dict:
    """Per state (``FM``, ``AFM``): ``moment`` (:func:`moment_minimum`), ``eos`` (:func:`equation_of_state` plus a0)
    and ``elastic`` (:func:`elastic_from_strains`), each where its scan is present; and
    ``E_FM_minus_AFM_meV_per_atom`` when both states have an equation of state. ``configs`` are labelled (energy,
    stress, magnetic forces), ``origins`` their scan origins."""
    if len(configs) != len(origins):
        raise ValueError(f'{len(configs)} configurations but {len(origins)} origins')
    by_state: dict[str, dict[str, list]] = {}
    for cfg, origin in zip(configs, origins):
        state, kind, comp, value = parse_origin(origin)
        by_state.setdefault(state, {k: [] for k in SCAN_KINDS})[kind].append((comp, value, cfg))
    out = {}
    for state, scans in by_state.items():
        entry = {}
        if scans['moment']:
            m, t = [], []
            for _, _, cfg in scans['moment']:
                mag = _magnetic(cfg)
                m.append(float(np.mean(np.abs(cfg.moments[mag]))))
                t.append(float(np.mean(np.sign(cfg.moments[mag]) * cfg.mag_forces[mag])))
            entry['moment'] = moment_minimum(np.array(m), np.array(t))
            entry['moment']['curve'] = sorted(
                [mk, cfg.energy / cfg.natoms, tk] for mk, tk, (_, _, cfg) in zip(m, t, scans['moment'])
            )
        if len(scans['scale']) >= 5:
            cfgs = [cfg for _, _, cfg in sorted(scans['scale'], key=lambda x: x[1])]
            v = np.array([c.volume / c.natoms for c in cfgs])
            e = np.array([c.energy / c.natoms for c in cfgs])
            p = np.array([-np.sum(c.stress[:3]) / 3 * EV_PER_A3_IN_GPA for c in cfgs])
            eos = equation_of_state(v, e, p)
            ref = cfgs[0]
            length_per_volume = np.linalg.norm(ref.cell[0]) / (ref.volume / ref.natoms) ** (1 / 3)
            v0 = eos['V0_A3_per_atom']
            eos['a0_A'] = None if v0 is None else float(length_per_volume * v0 ** (1 / 3))
            eos['curve'] = [[float(x), float(y), float(z)] for x, y, z in zip(v, e, p)]
            entry['eos'] = eos
        zero = [cfg for comp, _, cfg in scans['strain'] if comp == 'none']
        strained = {(comp, value): cfg for comp, value, cfg in scans['strain'] if comp != 'none'}
        if zero and strained:
            entry['elastic'] = elastic_from_strains(strained, zero[0])
        out[state] = entry
    if all('eos' in out.get(s, {}) for s in ('FM', 'AFM')):
        diff = out['FM']['eos']['E0_eV_per_atom'] - out['AFM']['eos']['E0_eV_per_atom']
        out['E_FM_minus_AFM_meV_per_atom'] = float(diff * 1e3)
    return out


def _values(analysis: dict, equilibrated: dict | None) -> dict[tuple[str, str], float | None]:
    """(state, quantity) -> number of one analysis, in the keys of :data:`TOLERANCES`."""
    out = {}
    for state, entry in analysis.items():
        if not isinstance(entry, dict):
            continue
        if equilibrated is not None and state in equilibrated:
            out[(state, 'moment_muB')] = equilibrated[state]
        elif 'moment' in entry:
            out[(state, 'moment_muB')] = entry['moment']['m0_muB']
        if 'eos' in entry:
            out[(state, 'a0_A')] = entry['eos']['a0_A']
            out[(state, 'B_GPa')] = entry['eos']['B_GPa']
        for name in ('C11_GPa', 'C12_GPa', 'C44_GPa'):
            if name in entry.get('elastic', {}):
                out[(state, name)] = entry['elastic'][name]
    if 'E_FM_minus_AFM_meV_per_atom' in analysis:
        out[('FM-AFM', 'E_FM_minus_AFM_meV_per_atom')] = analysis['E_FM_minus_AFM_meV_per_atom']
    return out


def compare(reference: dict, potential: dict, equilibrated: dict[str, float] | None = None) -> list[dict]:
    """Rows (state, quantity, reference, potential, relative difference, tolerance, within) of every quantity of
    :data:`TOLERANCES` that the reference has. ``equilibrated``: the potential's moment per state after moment
    equilibration (mu_B), used instead of its scan minimum. A missing value never passes; an energy difference of
    the wrong sign never passes."""
    ref, pot = _values(reference, None), _values(potential, equilibrated)
    rows = []
    for (state, quantity), r in ref.items():
        p = pot.get((state, quantity))
        rel = None if r is None or p is None or r == 0 else abs(p - r) / abs(r)
        within = rel is not None and rel <= TOLERANCES[quantity]
        if quantity.startswith('E_FM') and r is not None and p is not None:
            within = within and np.sign(p) == np.sign(r)
        rows.append({'state': state, 'quantity': quantity, 'reference': r, 'potential': p, 'relative_difference': rel,
                     'tolerance': TOLERANCES[quantity], 'within': bool(within)})  # fmt: skip
    return rows


def _equilibrated_moments(model, configs: list[Configuration], origins: list[str], tol: float) -> dict[str, float]:
    """Per state, the mean |m| of the magnetic atoms after the model equilibrates the moments of the unstrained
    (m0, a0) cell (non-magnetic atoms kept at their moments, signs kept); mu_B."""
    from ..simulate import equilibrate_moments

    out = {}
    for cfg, origin in zip(configs, origins):
        state, kind, comp, _ = parse_origin(origin)
        if kind != 'strain' or comp != 'none' or not getattr(model, 'is_magnetic', False):
            continue
        mag = _magnetic(cfg)
        fixed = np.ones(cfg.natoms, dtype=bool)
        fixed[mag] = False
        relaxed, _ = equilibrate_moments(model, cfg.clear_labels(), tol=tol, fixed=fixed)
        out[state] = float(np.mean(np.abs(relaxed.moments[mag])))
    return out


def run_scans(
    model,
    configs: list[Configuration],
    origins: list[str],
    outdir: str | Path,
    log: Callable[[str], None] = print,
) -> dict:
    """Analyse the labelled ``configs`` (the reference) and the model on the same cells and moments; write
    ``results.json`` (``reference``, ``potential``, ``equilibrated_moment_muB``, ``comparison``), ``arrays.npz`` and
    ``scans.png`` into ``outdir``. ``model``: a Potential or any model with ``evaluate(cfg)``."""
    from ..simulate import evaluate_model
    from . import plots
    from .run import json_safe

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    missing = [o for c, o in zip(configs, origins) if c.energy is None or c.virial is None or c.mag_forces is None]
    if missing:
        raise ValueError(f'{len(missing)} reference configurations lack energy, stress or magnetic forces, first '
                         f'{missing[0]}')  # fmt: skip
    reference = analyse_scans(configs, origins)
    predicted = [evaluate_model(model, cfg).to_configuration(cfg) for cfg in configs]
    potential = analyse_scans(predicted, origins)
    equilibrated = _equilibrated_moments(model, configs, origins, tol=1e-5)
    rows = compare(reference, potential, equilibrated)
    results = json_safe({'reference': reference, 'potential': potential, 'equilibrated_moment_muB': equilibrated,
                       'comparison': rows, 'tolerances': TOLERANCES})  # fmt: skip
    (outdir / 'results.json').write_text(json.dumps(results, indent=2) + '\n')
    np.savez(outdir / 'arrays.npz',
             reference_energy=np.array([c.energy for c in configs]),
             potential_energy=np.array([c.energy for c in predicted]),
             reference_stress=np.array([c.stress for c in configs]) * EV_PER_A3_IN_GPA,
             potential_stress=np.array([c.stress for c in predicted]) * EV_PER_A3_IN_GPA)  # fmt: skip
    plots.plot_scans(outdir / 'scans.png', reference, potential)
    for row in rows:
        ref = '-' if row['reference'] is None else f'{row["reference"]:.4g}'
        pot = '-' if row['potential'] is None else f'{row["potential"]:.4g}'
        log(f'{row["state"]:6} {row["quantity"]:28} reference {ref:>9}  potential {pot:>9}  '
            f'{"within" if row["within"] else "OUTSIDE"} {row["tolerance"]:.0%}')  # fmt: skip
    return results
