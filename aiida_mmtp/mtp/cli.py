"""``mmtp``: the engine's command line, run by CalcJobs on compute nodes.

Every command reads and writes plain files (``.mtp``, ``.cfg``, JSON), so it
runs the same on a laptop, in CI and on a Slurm node. Errors in the input
print one line naming the file, line or atom, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .atomic import atomic_output, write_text_atomic
from .cfg_io import format_cfg, iter_cfg, read_cfg, write_cfg
from .evaluate import evaluate
from .mtp_io import read_mtp, write_mtp
from .potential import Potential
from .threads import single_blas_thread

__all__ = ['main']


def _cmd_info(args: argparse.Namespace) -> int:
    pot = read_mtp(args.potential)
    info = pot.summary()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    names = ', '.join(info['species']) if info['species'] else f'{info["species_count"]} (unnamed)'
    print(f'potential        {args.potential}')
    print(f'species          {names}')
    print(f'level            {info["level"] if info["level"] is not None else "unknown"}')
    print(f'radial basis     N_phi = {info["radial_basis_size"]}, {info["radial_funcs_count"]} radial functions')
    print(f'magnetic basis   N_psi = {info["magnetic_basis_size"]}' + ('' if pot.is_magnetic else ' (non-magnetic)'))
    if pot.is_magnetic:
        ranges = '; '.join(
            f'{n}: {lo:g} .. {hi:g}'
            for n, (lo, hi) in zip(info['species'] or range(pot.species_count), info['moment_ranges'])
        )
        print(f'moment ranges    {ranges} mu_B')
        print(f'energy mode      {info["energy_mode"]}')
    print(f'cutoff           {info["min_dist"]} .. {info["max_dist"]} A')
    print(f'basis functions  {info["basis_functions"]} ({info["basic_moments"]} basic moments)')
    print(f'parameters       {info["parameters"]}')
    return 0


def _cmd_new(args: argparse.Namespace) -> int:
    pot = Potential.from_level(
        args.level,
        args.species,
        r_min=args.min_dist,
        r_cut=args.max_dist,
        n_phi=args.radial_basis_size,
        n_psi=args.magnetic_basis_size,
        m_max=args.m_max,
        symmetric=None if args.energy_mode is None else args.energy_mode == 'symmetric',
        seed=args.seed,
    )
    write_mtp(pot, args.output)
    print(f'wrote {args.output}: level {args.level}, {pot.n_params} parameters')
    return 0


def _cmd_calc_efs(args: argparse.Namespace) -> int:
    pot = read_mtp(args.potential, args.species)
    symmetric = {None: None, 'symmetric': True, 'plain': False}[args.energy_mode]
    grads = []
    t0 = time.perf_counter()
    n_atoms = 0
    out = Path(args.output)
    with atomic_output(out) as handle:  # OUT is replaced only once every configuration was read and evaluated
        for k, cfg in enumerate(iter_cfg(args.input)):
            res = evaluate(pot, cfg, gradient=args.dedtheta is not None, symmetric=symmetric,
                           label=f'{args.input} configuration {k + 1}')  # fmt: skip
            handle.write(format_cfg(res.to_configuration(cfg)))
            n_atoms += cfg.natoms
            if args.dedtheta is not None:
                grads.append(res.grad)
            if args.progress and (k + 1) % args.progress == 0:
                print(f'calc-efs: {k + 1} configurations', file=sys.stderr, flush=True)
        if n_atoms == 0:
            raise ValueError(f'{args.input}: no configuration in the file')
    if args.dedtheta is not None:
        with atomic_output(args.dedtheta) as handle:
            np.savetxt(handle, np.array(grads).reshape(len(grads), -1))
    dt = time.perf_counter() - t0
    print(f'calc-efs: {n_atoms} atoms in {dt:.3f} s, written to {out}')
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .fit import errors, fit, print_progress
    from .loss import TrainingData, Weights

    pot = read_mtp(args.potential, args.species)
    configs = _read_some(args.train)
    test = _read_some(args.test) if args.test else None
    weights = Weights(*args.weights)
    if args.earlier is not None and not 0 < args.earlier < len(configs):
        raise ValueError(f'--earlier {args.earlier}: give a number between 1 and {len(configs) - 1}')
    with np.errstate(over='ignore', invalid='ignore'):  # a loss that overflows is reported below, not warned about
        result = fit(
            pot, configs, weights=weights, max_iter=args.max_iter, tol=args.tol,
            reinit_linear=True if args.reinit_linear else None, progress=print_progress if args.progress else None,
        )  # fmt: skip
    if not (np.isfinite(result.history[-1]) and np.all(np.isfinite(pot.get_params()))):
        why = result.message.strip(' :') or 'no finite result'
        raise FitFailed(f'the fit failed ({why}): loss {result.history[-1]:.3g}; nothing written')
    write_mtp(pot, args.output)
    report = {
        'configurations': len(configs),
        'iterations': result.iterations,
        'converged': result.converged,
        'message': result.message,
        'loss_initial': result.history[0],
        'loss_final': result.history[-1],
        'seconds': round(result.seconds, 3),
        'weights': weights.__dict__,
        'errors': result.errors,
        'loss_history': result.history,
    }
    if test is not None:  # held out: never part of the loss
        report['test_errors'] = errors(pot, TrainingData(test, pot))
    if args.earlier:  # the fit quality: its errors on the labels an earlier fit had, and on the new ones
        report['earlier_errors'] = errors(pot, TrainingData(configs[: args.earlier], pot))
        report['new_errors'] = errors(pot, TrainingData(configs[args.earlier :], pot))
    if args.report:
        write_text_atomic(args.report, json.dumps(report, indent=2) + '\n')
    print(f'train: {len(configs)} configurations, {result.iterations} iterations, loss '
          f'{result.history[0]:.4e} -> {result.history[-1]:.4e} ({result.message}); wrote {args.output}')  # fmt: skip
    print(_format_errors(result.errors))
    if test is not None:
        print(f'test set ({len(test)} configurations, not fitted):')
        print(_format_errors(report['test_errors']))
    return 0


class FitFailed(RuntimeError):
    """The optimisation ended without finite parameters (exit status 3)."""


def _read_some(path: str) -> list:
    """The configurations of ``path``; ValueError when there are none."""
    configs = read_cfg(path)
    if not configs:
        raise ValueError(f'{path}: no configuration in the file')
    return configs


def _format_errors(err: dict) -> str:
    rows = [('energy', 'energy_per_atom_meV', 'meV/atom'), ('forces', 'forces_meV_per_A', 'meV/A'),
            ('stress', 'stress_GPa', 'GPa'), ('magnetic forces', 'mag_forces_meV_per_muB', 'meV/mu_B')]  # fmt: skip
    lines = [f'{"":16s} {"RMSE":>12s} {"MAE":>12s}']
    for name, key, unit in rows:
        if key in err:
            lines.append(f'{name:16s} {err[key]["rmse"]:12.4g} {err[key]["mae"]:12.4g}  {unit}')
    return '\n'.join(lines)


def _cmd_select(args: argparse.Namespace) -> int:
    from .selection import ActiveSet

    pot = read_mtp(args.potential, args.species)
    report = {'n_params': pot.n_params}
    if args.train:
        als = ActiveSet.build(pot, read_cfg(args.train), fill=args.fill, neighborhoods=args.neighborhoods)
        report['n_from_training'] = n_train = int(np.count_nonzero(als.source >= 0))
        per = ' (neighbourhood rows)' if als.neighborhoods else ''
        print(f'select: active set of {pot.n_params} rows{per}, {n_train} from the training set')
    else:
        als = ActiveSet.load(args.als or _default_als(args.potential))
        als.check(pot)
    if args.candidates:
        candidates = read_cfg(args.candidates)
        rows, owner = als.rows(pot, candidates, f'{args.candidates} configuration')
        grades = als.grades(rows) if len(rows) else np.zeros(0)
        als, chosen = als.select(rows, owner=owner, max_new=args.max)
        write_cfg([candidates[k] for k in chosen], args.selected)
        report.update(n_candidates=len(candidates), n_selected=len(chosen), selected=[int(k) for k in chosen],
                      max_grade=float(grades.max()) if len(grades) else 0.0)  # fmt: skip
        print(f'select: {len(chosen)} of {len(candidates)} candidates selected, written to {args.selected}')
    als.save(args.output or _default_als(args.potential))
    if args.report:
        write_text_atomic(args.report, json.dumps(report, indent=2) + '\n')
    return 0


def _default_als(potential: str) -> str:
    return str(Path(potential).with_suffix('.als'))


def _cmd_grade(args: argparse.Namespace) -> int:
    from .selection import ActiveSet

    pot = read_mtp(args.potential, args.species)
    als = ActiveSet.load(args.als or _default_als(args.potential))
    als.check(pot)
    configs = _read_some(args.input)
    grades = als.config_grades(pot, configs, f'{args.input} configuration')  # per atom in neighbourhood mode
    for cfg, gamma in zip(configs, grades):
        cfg.features['MV_grade'] = repr(float(gamma))
    write_cfg(configs, args.output)
    print(f'grade: {len(configs)} configurations, max grade {grades.max():.4g}, written to {args.output}')
    return 0


def _simulate(args: argparse.Namespace, kind: str) -> int:
    from .ase_io import write_extxyz
    from .selection import ActiveSet
    from .simulate import Grader, equilibrate_moments, print_md_progress, relax, run_md
    from .spinflip import SpinMoves

    pot = read_mtp(args.potential, args.species)
    als = None
    if not args.no_grading:
        als = ActiveSet.load(args.als or _default_als(args.potential))
    gamma_low = args.gamma_low if args.gamma_low is not None else (4.0 if kind == 'md' else 2.0)
    grader = Grader(pot, als, gamma_low=gamma_low, gamma_up=args.gamma_up)
    reports, finals, frames = [], [], []
    for k, cfg in enumerate(_read_some(args.input)):
        traj = []
        if kind == 'equilibrate':
            out, rep = equilibrate_moments(pot, cfg, grader, tol=args.tol, max_iter=args.steps, trajectory=traj)
        elif kind == 'relax':
            out, rep = relax(pot, cfg, grader, fmax=args.fmax, relax_cell=not args.fixed_cell, steps=args.steps,
                             trajectory=traj, equilibrate=not args.fixed_moments)  # fmt: skip
        else:
            spin = None
            if args.spin_moves:
                spin = SpinMoves(args.spin_moves, every=args.spin_every, attempts=args.flip_attempts,
                                 up_fraction=args.up_fraction)  # fmt: skip
            out, rep = run_md(pot, cfg, grader, temperature=args.temperature, timestep=args.timestep, steps=args.steps,
                              friction=args.friction, seed=args.seed + k, ensemble=args.ensemble, trajectory=traj,
                              progress=print_md_progress if args.progress else None,
                              progress_every=args.progress, spin=spin)  # fmt: skip
        finals.append(out)
        frames += traj
        reports.append({'configuration': k + 1, **rep.as_dict()})
        moved = ''
        if rep.spin_moves:
            moves = rep.spin_moves
            moved = (f', {moves["redrawn"]} patterns redrawn' if moves['kind'] == 'dlm' else
                     f', {moves["accepted"]} of {moves["attempts"]} flips accepted')  # fmt: skip
        print(f'{kind}: configuration {k + 1}: {rep.stop_reason} after {rep.steps} steps, run max grade '
              f'{rep.max_grade:.3g}, {rep.n_preselected} preselected so far{moved}', flush=True)  # fmt: skip
        if rep.stop_reason == 'extrapolation' and args.stop_all:
            break
    if args.output:
        write_cfg(finals, args.output)
    if args.preselected:
        write_cfg(grader.preselected, args.preselected)
    if args.trajectory and frames:
        write_extxyz(frames, args.trajectory, pot.species)
    summary = {'kind': kind, 'gamma_low': gamma_low, 'gamma_up': args.gamma_up, 'preselected': len(grader.preselected),
               'max_grade': grader.max_grade, 'runs': reports}  # fmt: skip
    if args.report:
        write_text_atomic(args.report, json.dumps(summary, indent=2) + '\n')
    return 0


def _cmd_label_ref(args: argparse.Namespace) -> int:
    from .reference import MagneticPairPotential

    ref = MagneticPairPotential()
    configs = read_cfg(args.input)
    if args.free_moments:  # the model's own moments at fixed atoms (signs kept), as free spin-polarised DFT finds
        from .simulate import equilibrate_moments

        configs = [equilibrate_moments(ref, cfg, tol=1e-6, max_iter=500)[0] for cfg in configs]
    configs = [ref.label(cfg) for cfg in configs]
    write_cfg(configs, args.output)
    moments = 'equilibrium' if args.free_moments else 'given'
    print(
        f'label-ref: {len(configs)} configurations labelled by the analytic reference at their {moments} moments, '
        f'written to {args.output}'
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import ERROR_KEYS, run_demo

    print(f'demo: active learning on the synthetic CrN-like problem in {args.workdir}', flush=True)
    result = run_demo(args.workdir, dlm_rounds=args.dlm_rounds, neighborhoods=args.neighborhoods,
                      log=lambda line: print(f'demo: {line}', flush=True))  # fmt: skip
    units = {'energy_per_atom_meV': 'meV/atom', 'forces_meV_per_A': 'meV/A', 'stress_GPa': 'GPa',
             'mag_forces_meV_per_muB': 'meV/mu_B'}  # fmt: skip
    print(f'demo: selected per round {result.selected}; final training set {result.training_size} configurations')
    print(f'{"test-set RMSE":24s} {"initial fit":>12s} {"after AL":>12s}')
    for key in ERROR_KEYS:
        print(f'{key:24s} {result.errors_initial[key]:12.4g} {result.errors_final[key]:12.4g}  {units[key]}')
    if result.dlm_selected:
        print(f'demo: DLM-MD stage selected per round {result.dlm_selected}')
        print(f'{"random-state RMSE":24s} {"before DLM":>12s} {"after DLM":>12s}')
        for key in ERROR_KEYS:
            before, after = result.errors_random_before_dlm[key], result.errors_random_after_dlm[key]
            print(f'{key:24s} {before:12.4g} {after:12.4g}  {units[key]}')
    print(f'demo: potential {Path(args.workdir) / "pot.mtp"}, training set {Path(args.workdir) / "train.cfg"}, '
          f'summary {Path(args.workdir) / "summary.json"}')  # fmt: skip
    return 0 if result.selected and result.selected[-1] == 0 else 1


def _cmd_properties(args: argparse.Namespace) -> int:
    import warnings

    from .properties.run import run_property
    from .reference import MagneticPairPotential
    from .structures import rocksalt

    model = MagneticPairPotential() if args.potential == 'reference' else read_mtp(args.potential, args.species)
    if model.species is None:
        raise ValueError(f'{args.potential} does not name its species: give --species')
    if (args.structure is None) == (args.rocksalt is None):
        raise ValueError('give the unit cell as --structure FILE.cfg or --rocksalt A (the 8-atom B1 cell)')
    unit = rocksalt(args.rocksalt) if args.structure is None else read_cfg(args.structure)[0]
    settings = {}
    if args.settings:
        try:
            settings = json.loads(Path(args.settings).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f'{args.settings}: not valid JSON ({exc})') from exc
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # phonopy's notes on default primitive matrices and mesh symmetry
        run_property(args.kind, model, unit, settings, args.output_dir,
                     log=lambda line: print(f'properties: {line}', flush=True))  # fmt: skip
    print(f'properties: {args.kind} done in {time.perf_counter() - t0:.1f} s, results in {args.output_dir}')
    return 0


def _cmd_scans(args: argparse.Namespace) -> int:
    from .properties.scans import run_scans
    from .reference import MagneticPairPotential

    model = MagneticPairPotential() if args.potential == 'reference' else read_mtp(args.potential, args.species)
    configs = read_cfg(args.labels)
    origins = [cfg.features.get('origin') for cfg in configs]
    if not configs or None in origins:
        raise ValueError(f'{args.labels}: every configuration needs a Feature origin (STATE:KIND:VALUE)')
    t0 = time.perf_counter()
    run_scans(model, configs, origins, args.output_dir, log=lambda line: print(f'scans: {line}', flush=True))
    print(f'scans: {len(configs)} configurations in {time.perf_counter() - t0:.1f} s, results in {args.output_dir}')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='mmtp', description='Magnetic moment tensor potential engine.')
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('info', help='describe a potential: species, level, basis sizes, parameter count')
    p.add_argument('potential')
    p.add_argument('--json', action='store_true', help='print JSON')
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser('new', help='create an untrained potential of a given level')
    p.add_argument('output')
    p.add_argument('--level', type=int, required=True)
    p.add_argument('--species', nargs='+', required=True, help='chemical symbols, in type order')
    p.add_argument('--min-dist', type=float, default=1.7, help='R_min, Angstrom')
    p.add_argument('--max-dist', type=float, default=5.0, help='R_cut, Angstrom')
    p.add_argument('--radial-basis-size', type=int, default=8, help='N_phi')
    p.add_argument('--magnetic-basis-size', type=int, default=1, help='N_psi (1: non-magnetic)')
    p.add_argument('--m-max', type=float, nargs='+', help='M_max per species (or one for all), mu_B')
    p.add_argument('--energy-mode', choices=['symmetric', 'plain'], help='default: symmetric when magnetic')
    p.add_argument('--seed', type=int, default=0)
    p.set_defaults(func=_cmd_new)

    p = sub.add_parser('calc-efs', help='energy, forces, stress and magnetic forces for every configuration')
    p.add_argument('potential')
    p.add_argument('input', help='input .cfg')
    p.add_argument('output', help='output .cfg')
    p.add_argument('--species', nargs='+', help='species names, if the potential does not carry them')
    p.add_argument('--energy-mode', choices=['symmetric', 'plain'], help="default: the potential's own")
    p.add_argument('--dedtheta', metavar='FILE', help='also write dE/dtheta, one line per configuration')
    p.add_argument('--progress', type=int, default=0, metavar='N', help='report every N configurations')
    p.set_defaults(func=_cmd_calc_efs)

    p = sub.add_parser('train', help='fit a potential to labelled configurations')
    p.add_argument('potential', help='initial potential (untrained: least-squares start; trained: warm start)')
    p.add_argument('train', help='training set .cfg')
    p.add_argument('output', help='trained potential .mtp')
    p.add_argument('--species', nargs='+')
    p.add_argument('--weights', nargs=4, type=float, default=[1.0, 0.01, 0.001, 0.1], metavar=('WE', 'WF', 'WS', 'WT'),
                   help='energy, forces, stress, magnetic-force weights (paper: 1 0.01 0.001 0.1)')  # fmt: skip
    p.add_argument('--max-iter', type=int, default=1000)
    p.add_argument('--tol', type=float, default=1e-9, help='relative loss decrease at which to stop')
    p.add_argument('--reinit-linear', action='store_true', help='least-squares start even for a trained potential')
    p.add_argument('--report', help='write errors and loss history as JSON')
    p.add_argument(
        '--earlier',
        type=int,
        metavar='N',
        help='the first N configurations were fitted before: report the errors on them and on the rest',
    )
    p.add_argument('--test', metavar='TEST.cfg', help='held-out labelled configurations: their errors (test_errors)')
    p.add_argument('--progress', action='store_true', help='print the loss every iteration (stderr)')
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser('select', help='build the active set; select candidates to label by maxvol')
    p.add_argument('potential')
    p.add_argument('--train', help='build the active set from this training set')
    p.add_argument('--als', help='existing active set (default: POT.als)')
    p.add_argument('--candidates', help='preselected configurations (.cfg)')
    p.add_argument('--selected', default='selected.cfg', help='where to write the selected candidates')
    p.add_argument('--max', type=int, help='select at most this many')
    p.add_argument('--fill', type=float, default=1.0, help='diagonal of the unit rows that fill a small set')
    p.add_argument(
        '--neighborhoods',
        action='store_true',
        help='with --train: per-atom rows (MLIP-3 neighbourhood selection); kept in the active-set file',
    )
    p.add_argument('--output', help='where to write the (updated) active set (default: POT.als)')
    p.add_argument('--report', help='JSON: parameters, rows from training, candidates, selected indices')
    p.add_argument('--species', nargs='+')
    p.set_defaults(func=_cmd_select)

    p = sub.add_parser('grade', help='extrapolation grade of each configuration (Feature MV_grade)')
    p.add_argument('potential')
    p.add_argument('input')
    p.add_argument('output')
    p.add_argument('--als', help='active set (default: POT.als)')
    p.add_argument('--species', nargs='+')
    p.set_defaults(func=_cmd_grade)

    for kind, text in (('equilibrate', 'minimise the energy over the moments at fixed atoms'),
                       ('relax', 'equilibrate the moments, then relax positions and cell at those moments'),
                       ('md', 'molecular dynamics with moments re-equilibrated every step')):  # fmt: skip
        p = sub.add_parser(kind, help=f'{text}, grading every configuration')
        p.add_argument('potential')
        p.add_argument('input', help='starting configurations (.cfg with moments)')
        p.add_argument('--output', help='final configurations (.cfg)')
        p.add_argument('--preselected', default='preselected.cfg', help='configurations with gamma >= gamma_low')
        p.add_argument('--trajectory', help='extxyz trajectory with moments, energy and grade per frame')
        p.add_argument('--report', help='JSON summary: why each run stopped, grades')
        p.add_argument('--als', help='active set (default: POT.als)')
        p.add_argument('--no-grading', action='store_true', help='run without an active set')
        p.add_argument('--gamma-low', type=float, help='default 2 (4 for md)')
        p.add_argument('--gamma-up', type=float, default=10.0)
        p.add_argument('--stop-all', action='store_true', help='stop all runs at the first extrapolation')
        p.add_argument('--species', nargs='+')
        if kind == 'equilibrate':
            p.add_argument('--tol', type=float, default=1e-4, help='magnetic force tolerance, eV/mu_B')
            p.add_argument('--steps', type=int, default=200)
        elif kind == 'relax':
            p.add_argument('--fmax', type=float, default=0.01, help='eV/A')
            p.add_argument('--fixed-cell', action='store_true')
            p.add_argument('--fixed-moments', action='store_true', help='relax at the moments given (no equilibration)')
            p.add_argument('--steps', type=int, default=500)
        else:
            p.add_argument('--temperature', type=float, default=300.0, help='K')
            p.add_argument('--timestep', type=float, default=1.0, help='fs')
            p.add_argument('--steps', type=int, default=1000)
            p.add_argument('--friction', type=float, default=0.01, help='Langevin friction, 1/fs')
            p.add_argument('--ensemble', choices=['nvt', 'nve'], default='nvt')
            p.add_argument('--seed', type=int, default=0)
            p.add_argument('--progress', type=int, default=0, metavar='N', help='report every N steps')
            p.add_argument(
                '--spin-moves',
                choices=['dlm', 'mdmc'],
                help='move the sign pattern: dlm (redraw it at random) or mdmc (Metropolis spin flips)',
            )
            p.add_argument('--spin-every', type=int, default=10, metavar='N', help='MD steps between sign moves')
            p.add_argument('--flip-attempts', type=int, default=1, help='mdmc: flips tried per move')
            p.add_argument('--up-fraction', type=float, default=0.5, help='dlm: fraction of moments up per species')
        p.set_defaults(func=lambda a, kind=kind: _simulate(a, kind))

    p = sub.add_parser('properties', help='properties of a potential: state average, elastic, phonons, qha')
    p.add_argument('kind', choices=['average', 'elastic', 'phonons', 'qha'])
    p.add_argument('potential', help="the .mtp file, or 'reference' for the analytic CrN-like reference potential")
    p.add_argument('--structure', help='unit cell (.cfg, first configuration; types = the species of the potential)')
    p.add_argument('--rocksalt', type=float, metavar='A', help='or: the 8-atom B1 cell of lattice parameter A')
    p.add_argument('--settings', help='JSON settings (see aiida_mmtp.mtp.properties.run)')
    p.add_argument('--output-dir', default='properties', help='results.json, arrays.npz, CSV tables, PNG plots')
    p.add_argument('--species', nargs='+')
    p.set_defaults(func=_cmd_properties)

    p = sub.add_parser('scans', help='E(m), E(V) and strain scans: reference labels beside the potential')
    p.add_argument('potential', help="the .mtp file, or 'reference' for the analytic CrN-like reference potential")
    p.add_argument('--labels', required=True, help='labelled scan configurations (.cfg, each with Feature origin)')
    p.add_argument('--output-dir', default='scans', help='results.json, arrays.npz, scans.png')
    p.add_argument('--species', nargs='+')
    p.set_defaults(func=_cmd_scans)

    p = sub.add_parser('demo', help='engine-level active-learning run on a synthetic CrN-like problem')
    p.add_argument('workdir')
    p.add_argument(
        '--dlm-rounds',
        type=int,
        default=0,
        metavar='N',
        help='after the fixed-sign rounds converge, at most N rounds of a DLM-MD stage (16-atom cells)',
    )
    p.add_argument('--neighborhoods', action='store_true', help='grade and select by per-atom (neighbourhood) rows')
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser('label-ref', help='label configurations with the analytic magnetic pair potential (tests)')
    p.add_argument('input')
    p.add_argument('output')
    p.add_argument(
        '--free-moments',
        action='store_true',
        help="label at the model's equilibrium moments (signs kept) instead of the given ones",
    )
    p.set_defaults(func=_cmd_label_ref)
    return parser


#: commands that do no heavy numerics (their output is read by programs: no thread line)
QUIET_COMMANDS = ('info', 'new')


@single_blas_thread
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command not in QUIET_COMMANDS:
        import numba

        # a job's log says how many cores its numerics used (the plugin sets NUMBA_NUM_THREADS from its resources)
        print(f'mmtp {args.command}: {numba.get_num_threads()} threads', flush=True)
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:
        print(f'mmtp {args.command}: error: {exc}', file=sys.stderr)
        return 2
    except FitFailed as exc:
        print(f'mmtp {args.command}: error: {exc}', file=sys.stderr)
        return 3


if __name__ == '__main__':
    sys.exit(main())
