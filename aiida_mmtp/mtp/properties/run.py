"""One property calculation from a settings dictionary to files: what ``mmtp properties`` runs.

Kinds (:data:`KINDS`): ``average`` (the state average and its convergence: one
atom displaced, running mean and standard error of energy and force against
the number of states), ``elastic``, ``phonons`` and ``qha``. Each writes into
an output folder ``results.json`` (numbers and reports), ``arrays.npz``
(curves and matrices), CSV tables and PNG figures, and returns the results.

Settings (all optional except where said; units in brackets):

- ``state``: ``kind`` (FM, AFM, PM), ``moments`` {species: mu_B} (default 0.75 M_max for species with
  M_max >= 1 mu_B; species left out start at 0 and keep it), ``n_states`` (PM, default 50), ``seed``,
  ``equilibrate`` (default true: moment sizes re-equilibrated at every structure; false: kept), ``signs``
  (an ordered state of another kind: +1/-1/0 per atom of the unit cell), ``sampling`` (PM: ``random``, the
  default and the paper's; ``dlm-md`` or ``mdmc``: the sign patterns that MD of the potential with DLM redraws or
  Metropolis flips visits, at ``temperature`` [K] 1000, one per ``sample_every`` steps (10), ``flip_attempts``
  per mdmc move (8)).
- ``tol``: moment equilibration tolerance [eV/mu_B], 1e-6.
- ``relax``: full | volume | none (default full for FM/AFM, volume for PM); ``fmax`` [eV/A], 1e-3.
- ``supercell``: repetitions of the unit cell for the state average (PM default 2 2 2, ordered 1 1 1;
  phonons and qha: the phonon supercell, default 2 2 2).
- average: ``displace_atom`` (1-based, default the first atom of the first magnetic species),
  ``displacement`` [A] (3 numbers, default 0.01 0 0).
- elastic: ``magnitudes`` (strains, default 0.005 0.01, both signs), ``method`` (stress | energy | both); a PM
  result carries ``C_state_sem_GPa``, the standard error of C over its states.
- phonons: ``distance`` [A] 0.01, ``primitive`` (phonopy primitive_matrix; default auto, AFM: P),
  ``mesh`` (16 16 16), ``band_points`` (41), ``nac`` {``epsilon``: scalar or 3x3, ``born``: {species: e}}.
- qha: ``scales`` (lattice factors, at least 5; required), ``t_max`` [K] 1500, ``t_step`` [K] 10,
  ``mesh`` (12 12 12), ``distance``, ``primitive``, ``neel_temperature`` [K] (marked on the plot).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from ase import Atoms

from ..ase_io import atoms_to_configuration
from ..configuration import EV_PER_A3_IN_GPA, Configuration
from . import plots
from .elastic import TABLE_COLUMNS, born_stability, comparison_rows, crystal_system, elastic_constants
from .phonons import PhononRun
from .qha import GAS_CONSTANT, MIN_VOLUMES, quasi_harmonic
from .relax import relax_structure, supercell_atoms
from .states import PM_SAMPLING_KEYS, StateSpec, make_states, moment_summary, running_statistics

__all__ = ['KINDS', 'SETTINGS', 'json_safe', 'parse_state', 'run_property', 'validate_settings']

_COMMON = {'state', 'tol', 'relax', 'fmax', 'supercell'}
#: The settings each kind accepts.
SETTINGS = {
    'average': _COMMON | {'displace_atom', 'displacement'},
    'elastic': _COMMON | {'magnitudes', 'method'},
    'phonons': _COMMON | {'distance', 'primitive', 'mesh', 'band_points', 'nac'},
    'qha': _COMMON | {'scales', 't_max', 't_step', 'mesh', 'distance', 'primitive', 'neel_temperature'},
}
KINDS = tuple(SETTINGS)
#: The PM sampling settings and the type each is read as (their defaults are :class:`StateSpec`'s).
_SAMPLING_TYPES = dict(zip(PM_SAMPLING_KEYS, (str, float, int, int), strict=True))


def parse_state(model, settings: dict) -> StateSpec:
    """The :class:`StateSpec` of ``settings['state']``; refuses states a non-magnetic potential cannot have."""
    state = dict(settings.get('state') or {})
    known = ('kind', 'moments', 'n_states', 'seed', 'equilibrate', 'signs', *PM_SAMPLING_KEYS)
    unknown = sorted(set(state) - set(known))
    if unknown:
        raise ValueError(f'state: unknown keys {", ".join(unknown)} (known: {", ".join(known)})')
    kind = state.get('kind', 'FM')
    if not model.is_magnetic:
        if kind != 'FM':
            raise ValueError(
                f'the potential is not magnetic: it has no {kind} state (a paramagnetic average or '
                'AFM order needs a magnetic potential); use state FM, whose moments it ignores'
            )
        state.setdefault('moments', {model.species[0]: 1.0})
    moments = state.get('moments')
    if moments is None:
        moments = {s: round(0.75 * float(hi), 3) for s, hi in zip(model.species, model.mag_max) if hi >= 1.0}
        if not moments:
            raise ValueError(
                'no species of the potential has a moment range of 1 mu_B or more: give the starting '
                'moments as state.moments, e.g. {"Fe": 2.2}'
            )
    return StateSpec(
        kind,
        {str(k): float(v) for k, v in moments.items()},
        int(state.get('n_states', 50)),
        int(state.get('seed', 0)),
        bool(state.get('equilibrate', True)),
        None if state.get('signs') is None else tuple(int(x) for x in state['signs']),
        **{key: kind_of(state[key]) for key, kind_of in _SAMPLING_TYPES.items() if key in state},  # else StateSpec's
    )


def validate_settings(kind: str, settings: dict) -> None:
    """Refuse unknown kinds and settings, and a QHA with too few volumes, naming the problem."""
    if kind not in SETTINGS:
        raise ValueError(f'property {kind!r}: choose from {", ".join(KINDS)}')
    unknown = sorted(set(settings) - SETTINGS[kind])
    if unknown:
        raise ValueError(f'{kind}: unknown settings {", ".join(unknown)} (known: {", ".join(sorted(SETTINGS[kind]))})')
    if kind == 'qha':
        scales = settings.get('scales')
        if scales is None or len(set(float(s) for s in scales)) < MIN_VOLUMES:
            n = 0 if scales is None else len(set(scales))
            raise ValueError(f'qha needs at least {MIN_VOLUMES} different volumes (settings.scales), got {n}')
    reps = settings.get('supercell')
    if reps is not None and (len(reps) != 3 or any(int(r) < 1 for r in reps)):
        raise ValueError(f'supercell must be three positive integers, got {reps}')
    nac = settings.get('nac')
    if nac and (set(nac) != {'epsilon', 'born'}):
        raise ValueError(f'nac needs exactly epsilon and born (charges per species), got {sorted(nac)}')


def _state_supercell(spec: StateSpec, settings: dict) -> tuple[int, ...]:
    """The repetitions of the unit cell that carry the states: ``settings.supercell``, else 1x1x1 for an ordered
    state and 2x2x2 (64 atoms of B1) for PM."""
    return tuple(int(r) for r in settings.get('supercell', (1, 1, 1) if spec.is_ordered else (2, 2, 2)))


def _check_structure(model, unit: Configuration) -> None:
    if unit.cell is None:
        raise ValueError('the structure must be periodic (a unit cell)')
    if unit.types.max() >= len(model.species):
        raise ValueError(
            f'the structure has atom types up to {unit.types.max()}, the potential only '
            f'{len(model.species)} species ({", ".join(model.species)})'
        )


def _phase(model, unit: Configuration, spec: StateSpec, reps, settings: dict, log) -> tuple[Atoms, dict]:
    """The phase's cell (``unit`` x ``reps``) with its state-average calculator, relaxed as the settings say."""
    mode = settings.get('relax', 'full' if spec.is_ordered else 'volume')
    if not spec.is_ordered and mode == 'full':
        raise ValueError('the paramagnetic average is relaxed in volume only (relax: volume or none)')
    species = tuple(model.species)
    atoms = supercell_atoms(unit, species, reps)
    states = make_states(atoms_to_configuration(atoms, species), species, spec, model)
    atoms.calc = spec.calculator(model, states, float(settings.get('tol', 1e-6)))
    report = relax_structure(atoms, mode, fmax=float(settings.get('fmax', 1e-3)))
    report['mean_abs_moment_muB'] = _check_moments(atoms, species, spec, log)
    if not report['converged']:
        log(
            f'warning: the {mode} relaxation did not converge in {report["steps"]} steps (pressure '
            f'{report["pressure_GPa"]:.3g} GPa): the properties below are of an unrelaxed cell'
        )
    log(
        f'relaxed ({mode}) in {report["steps"]} steps: pressure {report["pressure_GPa"]:.3g} GPa, '
        f'cell lengths {np.round(atoms.cell.lengths() / np.asarray(reps), 5).tolist()} A'
    )
    return atoms, report


def _check_moments(atoms: Atoms, species: tuple[str, ...], spec: StateSpec, log) -> dict[str, float]:
    """Mean |m| per species after equilibration; warns when a magnetic species lost its moment (the potential then
    has no distinct FM, AFM and PM states at this structure)."""
    summary = moment_summary(atoms.calc, atoms_to_configuration(atoms, species).types, species)
    collapsed = [s for s, v in spec.moments.items() if abs(v) > 0 and summary.get(s, 0.0) < 0.1]
    if collapsed and spec.equilibrate:
        log(
            f'warning: the moments of {", ".join(collapsed)} equilibrate to ~0 mu_B with this potential: its FM, AFM '
            'and PM states are then one non-magnetic state (state.equilibrate: false keeps the starting sizes)'
        )
    return summary


def _relaxed_unit(model, unit: Configuration, spec: StateSpec, settings: dict, log) -> tuple[Atoms, dict]:
    """The relaxed unit cell of the phase: ordered states relax in the unit cell, PM in the supercell."""
    reps = (1, 1, 1) if spec.is_ordered else _state_supercell(spec, settings)
    atoms, report = _phase(model, unit, spec, reps, settings, log)
    species = tuple(model.species)
    if reps == (1, 1, 1):
        out = atoms.copy()
    else:  # volume relaxation: the unit cell scaled like the supercell
        out = supercell_atoms(unit, species, (1, 1, 1))
        out.set_cell(atoms.cell.array / np.asarray(reps)[:, None], scale_atoms=True)
    out.calc = None
    return out, report


def json_safe(value):
    """JSON-safe copy: NaN and inf become None, arrays lists."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_csv(path: Path, header: list[str], rows) -> None:
    with path.open('w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([f'{x:.8g}' if isinstance(x, float) else x for x in row])


def run_property(
    kind: str,
    model,
    unit: Configuration,
    settings: dict,
    outdir: str | Path,
    log: Callable[[str], None] = print,
) -> dict:
    """Compute property ``kind`` of ``unit`` (a periodic cell, types = the model's species indices).

    ``model`` is a :class:`~aiida_mmtp.mtp.Potential` or the analytic reference. Writes the files listed in
    the module docstring into ``outdir`` and returns the results dictionary (also ``results.json``).
    """
    validate_settings(kind, settings)
    _check_structure(model, unit)
    spec = parse_state(model, settings)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    label = f'{spec.kind}' + ('' if spec.is_ordered else f' ({spec.n_states} states)')
    log(f'{kind} of the {label} phase, {unit.natoms}-atom unit cell')
    results = {'kind': kind, 'state': spec.as_dict(), 'settings': settings}
    arrays = {}
    runner = {'average': _average, 'elastic': _elastic, 'phonons': _phonons, 'qha': _qha}[kind]
    runner(model, unit, spec, settings, outdir, results, arrays, label, log)
    results = json_safe(results)
    (outdir / 'results.json').write_text(json.dumps(results, indent=2) + '\n')
    np.savez(outdir / 'arrays.npz', **arrays)
    return results


def _average(model, unit, spec, settings, outdir, results, arrays, label, log) -> None:
    reps = _state_supercell(spec, settings)
    species = tuple(model.species)
    atoms = supercell_atoms(unit, species, reps)
    cfg = atoms_to_configuration(atoms, species)
    magnetic = [species.index(s) for s in spec.moments]
    default = int(np.flatnonzero(np.isin(cfg.types, magnetic))[0]) + 1
    index = int(settings.get('displace_atom', default))
    if not 1 <= index <= len(atoms):
        raise ValueError(f'displace_atom {index} is not an atom of the {len(atoms)}-atom cell')
    shift = np.asarray(settings.get('displacement', [0.01, 0.0, 0.0]), dtype=float).reshape(3)
    states = make_states(cfg, species, spec, model)
    positions = atoms.get_positions()
    positions[index - 1] += shift
    atoms.set_positions(positions)
    calc = spec.calculator(model, states, float(settings.get('tol', 1e-6)))
    atoms.calc = calc
    atoms.get_forces()
    moments = _check_moments(atoms, species, spec, log)
    per = calc.per_state
    e_mean, e_sem = running_statistics(per['energy'] / len(atoms))
    f_mean, f_sem = running_statistics(per['forces'][:, index - 1, :])
    n = np.arange(1, len(states) + 1)
    arrays.update(
        states=states,
        n_states=n,
        energy_per_atom=per['energy'] / len(atoms),
        energy_mean=e_mean,
        energy_sem=e_sem,
        force=per['forces'][:, index - 1, :],
        force_mean=f_mean,
        force_sem=f_sem,
        moments=per['moments'],
        mean_forces=calc.results['forces'],
        mean_stress=calc.results['stress'],
    )
    results.update(
        atoms=len(atoms),
        displaced_atom=index,
        displacement_A=shift.tolist(),
        n_states=len(states),
        energy_per_atom_eV=float(e_mean[-1]),
        energy_per_atom_sem_eV=float(e_sem[-1]),
        force_on_displaced_eV_per_A=f_mean[-1].tolist(),
        force_on_displaced_sem_eV_per_A=f_sem[-1].tolist(),
        stress_GPa=(calc.results['stress'] * EV_PER_A3_IN_GPA).tolist(),
        mean_abs_moment_muB=moments,
        unconverged_equilibrations=calc.not_converged,
    )
    _write_csv(
        outdir / 'convergence.csv',
        [
            'n_states',
            'energy_mean_eV_per_atom',
            'energy_sem_eV_per_atom',
            'force_x_mean_eV_per_A',
            'force_x_sem_eV_per_A',
        ],
        zip(n.tolist(), e_mean.tolist(), e_sem.tolist(), f_mean[:, 0].tolist(), f_sem[:, 0].tolist()),
    )
    plots.plot_convergence(
        outdir / 'convergence.png',
        n,
        (e_mean * 1e3, e_sem * 1e3),
        (f_mean[:, 0] * 1e3, f_sem[:, 0] * 1e3),
        f'{label}: atom {index} displaced by {np.linalg.norm(shift):g} A',
    )
    log(
        f'average over {len(states)} states: E {e_mean[-1]:.6f} eV/atom (+- {e_sem[-1] * 1e3:.3g} meV), force on '
        f'atom {index} {np.round(f_mean[-1], 5).tolist()} eV/A (+- {np.round(f_sem[-1] * 1e3, 3).tolist()} meV/A)'
    )


def _elastic(model, unit, spec, settings, outdir, results, arrays, label, log) -> None:
    reps = _state_supercell(spec, settings)
    atoms, relax_report = _phase(model, unit, spec, reps, settings, log)
    # the symmetry of the relaxed cell with its equilibrated moments (the lattice's alone for PM)
    atoms.get_potential_energy()
    moments = atoms.calc.per_state['moments'][0] if spec.is_ordered else None
    system, group = crystal_system(atoms, moments)
    method = settings.get('method', 'both')
    magnitudes = settings.get('magnitudes', [0.005, 0.01])
    out = elastic_constants(atoms, magnitudes=magnitudes, method=method)
    main = out['stress_strain' if 'stress_strain' in out else 'energy_strain']
    c = np.array(main['C'])
    stability = born_stability(c, system)
    results.update(
        relax=relax_report,
        lattice_A=(atoms.cell.lengths() / np.asarray(reps)).tolist(),
        crystal_system=system,
        space_group=group,
        elastic=out,
        C_GPa=c.tolist(),
        born_stability=stability,
    )
    arrays['C'] = c
    arrays['C_error'] = np.array(main['error'])
    sem = out.get('stress_strain', {}).get('state_sem')
    if sem is not None:  # PM: the statistical error of the average over its states
        results['C_state_sem_GPa'] = sem
        arrays['C_state_sem'] = np.array(sem)
    if 'stress_strain' in out and 'energy_strain' in out:
        cs, ce = np.array(out['stress_strain']['C']), np.array(out['energy_strain']['C'])
        scale = np.abs(cs).max()
        results['max_relative_difference_stress_vs_energy'] = float(np.abs(cs - ce).max() / scale)
        arrays['C_energy'] = ce
    rows = comparison_rows({spec.kind: c})
    results['table_ii'] = rows
    _write_csv(
        outdir / 'elastic_constants.csv',
        ['', 'xx', 'yy', 'zz', 'yz', 'xz', 'xy'],
        [[name, *row] for name, row in zip(('xx', 'yy', 'zz', 'yz', 'xz', 'xy'), c.tolist())],
    )
    _write_csv(
        outdir / 'table_ii.csv',
        ['state', 'method', *TABLE_COLUMNS],
        [[r['state'], r['method'], *(round(r[k], 1) for k in TABLE_COLUMNS)] for r in rows],
    )
    verdict = 'stable' if stability['stable'] else 'UNSTABLE'
    pm = '' if sem is None else f' (+- {sem[0][0]:.2g}, {sem[0][1]:.2g}, {sem[3][3]:.2g} over the states)'
    log(
        f'elastic constants ({system}, {group}): C11 {c[0, 0]:.1f}, C12 {c[0, 1]:.1f}, C44 {c[3, 3]:.1f} GPa{pm}; '
        f'Born-Huang: {verdict}'
    )


def _phonon_kwargs(spec: StateSpec, settings: dict) -> dict:
    return {
        'supercell': tuple(int(r) for r in settings.get('supercell', (2, 2, 2))),
        'primitive': settings.get('primitive', 'P' if spec.kind == 'AFM' else 'auto'),
        'distance': float(settings.get('distance', 0.01)),
        'tol': float(settings.get('tol', 1e-6)),
    }


def _phonons(model, unit, spec, settings, outdir, results, arrays, label, log) -> None:
    cell, relax_report = _relaxed_unit(model, unit, spec, settings, log)
    run = PhononRun(cell, model, spec, **_phonon_kwargs(spec, settings))
    gamma = run.gamma_frequencies()
    nac = settings.get('nac')
    if nac:
        run.set_nac(nac['epsilon'], nac['born'])
    bands = run.bands(cell, int(settings.get('band_points', 41)))
    dos = run.dos(tuple(settings.get('mesh', (16, 16, 16))))
    arrays.update(
        band_distances=bands['distances'],
        band_frequencies=bands['frequencies'],
        band_ticks=np.array(bands['ticks']),
        dos_frequencies=dos['frequency'],
        dos=dos['dos'],
        gamma_frequencies=gamma,
    )
    results.update(
        relax=relax_report,
        lattice_A=cell.cell.lengths().tolist(),
        phonopy=run.report,
        gamma_frequencies_THz=gamma.tolist(),
        max_frequency_THz=float(bands['frequencies'].max()),
        min_frequency_THz=float(bands['frequencies'].min()),
        band_labels=bands['labels'],
        imaginary_mesh_modes=dos['imaginary_modes'],
        mesh_modes=dos['mesh_modes'],
        nac=bool(nac),
    )
    _write_csv(
        outdir / 'bands.csv',
        ['distance_per_A', *[f'band_{k + 1}_THz' for k in range(gamma.size)]],
        [[float(x), *map(float, f)] for x, f in zip(bands['distances'], bands['frequencies'])],
    )
    _write_csv(
        outdir / 'dos.csv', ['frequency_THz', 'dos_per_THz'], zip(dos['frequency'].tolist(), dos['dos'].tolist())
    )
    title = f'{label}' + (' with NAC' if nac else '')
    plots.plot_phonons(outdir / 'phonons.png', bands, dos, title)
    log(
        f'phonons: Gamma {np.round(gamma, 3).tolist()} THz; max {results["max_frequency_THz"]:.3f} THz; '
        f'{dos["imaginary_modes"]} of {dos["mesh_modes"]} mesh modes imaginary'
    )


def _qha(model, unit, spec, settings, outdir, results, arrays, label, log) -> None:
    cell, relax_report = _relaxed_unit(model, unit, spec, settings, log)
    t_max, t_step = float(settings.get('t_max', 1500.0)), float(settings.get('t_step', 10.0))
    out = quasi_harmonic(
        cell,
        model,
        spec,
        settings['scales'],
        t_max=t_max,
        t_step=t_step,
        mesh=tuple(settings.get('mesh', (12, 12, 12))),
        progress=log,
        **_phonon_kwargs(spec, settings),
    )
    t = out['temperatures']
    for key in ('temperatures', 'alpha', 'beta', 'cp', 'cv', 'volume', 'bulk_modulus', 'volumes', 'energies', 'scales'):
        arrays[key] = out[key]

    def at(values, temperature):
        return float(np.interp(temperature, t, values))

    picks = [x for x in (300.0, 1000.0, t[-1]) if x <= t[-1]]
    v_range = (float(out['volumes'].min()), float(out['volumes'].max()))
    outside = t[(out['volume'] < v_range[0]) | (out['volume'] > v_range[1])]
    results.update(
        relax=relax_report,
        lattice_A=cell.cell.lengths().tolist(),
        volumes_A3=out['volumes'].tolist(),
        energies_eV=out['energies'].tolist(),
        imaginary_mesh_modes=out['imaginary_modes'],
        atoms_per_primitive=out['atoms_per_primitive'],
        alpha_per_K={f'{x:g}': at(out['alpha'], x) for x in picks},
        cp_J_per_K_mol_atoms={f'{x:g}': at(out['cp'], x) for x in picks},
        cv_J_per_K_mol_atoms={f'{x:g}': at(out['cv'], x) for x in picks},
        dulong_petit_J_per_K_mol_atoms=3 * GAS_CONSTANT,
        t_max_K=float(t[-1]),
        extrapolated_above_K=float(outside.min()) if outside.size else None,
        neel_temperature_K=settings.get('neel_temperature'),
    )
    _write_csv(
        outdir / 'qha.csv',
        ['T_K', 'alpha_per_K', 'cp_J_per_K_mol_atoms', 'cv_J_per_K_mol_atoms', 'volume_A3', 'bulk_modulus_GPa'],
        zip(
            t.tolist(),
            out['alpha'].tolist(),
            out['cp'].tolist(),
            out['cv'].tolist(),
            out['volume'].tolist(),
            out['bulk_modulus'].tolist(),
        ),
    )
    plots.plot_qha(outdir / 'qha.png', out, settings.get('neel_temperature'), f'{label}: quasi-harmonic')
    if outside.size:
        log(
            f'warning: above {outside.min():g} K the equilibrium volume lies outside the computed volumes '
            f'({v_range[0]:.3f} .. {v_range[1]:.3f} A^3): extend settings.scales'
        )
    log(
        'qha: '
        + ', '.join(
            f'{x:g} K: alpha {at(out["alpha"], x) * 1e6:.2f}e-6/K, Cp {at(out["cp"], x):.2f} J/K/mol' for x in picks
        )
    )
