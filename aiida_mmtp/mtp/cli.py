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

from .cfg_io import format_cfg, iter_cfg
from .evaluate import evaluate
from .mtp_io import read_mtp, write_mtp
from .potential import Potential

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
    with out.open('w') as handle:
        for k, cfg in enumerate(iter_cfg(args.input)):
            res = evaluate(pot, cfg, gradient=args.dedtheta is not None, symmetric=symmetric,
                           label=f'{args.input} configuration {k + 1}')  # fmt: skip
            handle.write(format_cfg(res.to_configuration(cfg)))
            n_atoms += cfg.natoms
            if args.dedtheta is not None:
                grads.append(res.grad)
            if args.progress and (k + 1) % args.progress == 0:
                print(f'calc-efs: {k + 1} configurations', file=sys.stderr, flush=True)
    if args.dedtheta is not None:
        np.savetxt(args.dedtheta, np.array(grads).reshape(len(grads), -1))
    dt = time.perf_counter() - t0
    print(f'calc-efs: {n_atoms} atoms in {dt:.3f} s, written to {out}')
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:
        print(f'mmtp {args.command}: error: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
