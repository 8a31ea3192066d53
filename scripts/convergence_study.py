#!/usr/bin/env python
"""Convergence study of constrained-DFT (cDFT) settings for B1 CrN with PAW + U in ABINIT 9.6.2.

Writes the inputs with the plugin's own writer (``write_cdft_input``), runs ABINIT (one process,
single-threaded, ``nice -n 5``), reads the outputs with the plugin's parser (``parse_abo``) and
merges every run and every derived table into one JSON file. Runs are cached: a run folder whose
input is unchanged and whose output is complete is parsed again, not rerun, so the script can be
re-run part by part.

Fixed: gpaw-data LDA PAW setups, U = 3 eV, J = 0 on Cr d; every atom constrained (Cr at its
target, N at 0); ratsph Cr 2.3, N 1.2 bohr; occopt 7, tsmear 0.01 Ha; pawecutdg = 2 ecut; iscf 7;
nstep 200; tolvrs 1e-10. ``--tolvrs`` and ``--nstep`` change the last two (a tolvrs other than 1e-10
adds ``_tv<tolvrs>`` to the cache tag; nstep is not in the tag); ``--retry-diemix`` reruns an unconverged
E(m) point once with that diemix (tag suffix ``_dm<diemix>``).

Parts (``--part``):
  cutoff     ecut scan at one k-mesh: FM, AFM (001) and the 'rough' state
  tolvrs     the same three states at one ecut with --tolvrs, compared with the default 1e-10
  kpoints    k-mesh scan at one ecut, same three states
  em         E(m) of FM and AFM at one ecut and one or more k-meshes
  eos        E(V) of FM and AFM at given moments; Birch-Murnaghan fit (ase.eos)
  supercell  16-atom (2x1x1) cell: random 4 up / 4 down and FM, vs the 8-atom FM
  report     print every finished run as a markdown table (reads the JSON only; runs nothing)

Units in the JSON: energies eV (``*_meV_atom`` meV/atom), forces eV/A, stress and pressure GPa
(ASE sign convention, Voigt xx yy zz yz xz xy; pressure = -trace/3), moments mu_B, magnetic forces
T = -dE/dm eV/mu_B, lattice constants A, bulk moduli GPa, CPU and wall time s.

Example:
  .venv/bin/python scripts/convergence_study.py --part cutoff --ecuts 12 15 20 25 30 --kmesh 2s
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiida_mmtp.calculations.abinit_input import CdftSettings, needs_spin_flip, write_cdft_input  # noqa: E402
from aiida_mmtp.parsers.abinit_output import parse_abo  # noqa: E402

EV_A3_GPA = 160.21766208
GPAW_SETUPS = Path('/usr/share/gpaw-setups')
PSEUDOS = {'Cr': 'Cr.LDA.xml', 'N': 'N.LDA.xml'}
ZNUCL = {'Cr': 24, 'N': 7}
RATSPH = {'Cr': 2.3, 'N': 1.2}
DFTU = {'Cr': (2, 3.0, 0.0)}
CONSTRAINED = ('Cr', 'N')
A0 = 4.15
ROUGH_MOMENTS = (2.2, 2.9, -2.4, -2.7)
ROUGH_MAX_DISP = 0.08  # A
ROUGH_SEED = 20240601
SUPERCELL_SEED = 7
MOMENT_TOL = 0.005  # mu_B: a constrained moment further than this from its target is flagged
DEFAULT_TOLVRS = 1e-10
DEFAULT_NSTEP = 200

CR_FRAC = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])
N_FRAC = CR_FRAC + 0.5


# ---------------------------------------------------------------- structures and states


def cubic_cell(a: float, reps: tuple[int, int, int] = (1, 1, 1)):
    """B1 CrN built from the 8-atom cubic cell repeated ``reps`` times: all Cr first, then all N (A)."""
    shifts = np.array([(i, j, k) for i in range(reps[0]) for j in range(reps[1]) for k in range(reps[2])], float)
    cr = np.concatenate([CR_FRAC + s for s in shifts]) * a
    n = np.concatenate([N_FRAC % 1.0 + s for s in shifts]) * a
    cell = np.diag(np.array(reps, float) * a)
    symbols = ['Cr'] * len(cr) + ['N'] * len(n)
    return symbols, cell, np.concatenate([cr, n])


def afm_signs(positions_cr: np.ndarray, a: float) -> np.ndarray:
    """AFM (001) layering: + on the z = 0 Cr layer, - on z = a/2."""
    return np.where(np.isclose(positions_cr[:, 2] % a, 0.0, atol=1e-6), 1.0, -1.0)


def make_state(state: str, a: float = A0, m: float = 2.5):
    """(symbols, cell, positions, moments) of an 8-atom state: 'fm', 'afm' or 'rough'."""
    symbols, cell, pos = cubic_cell(a)
    ncr = symbols.count('Cr')
    mom = np.zeros(len(symbols))
    if state == 'fm':
        mom[:ncr] = m
    elif state == 'afm':
        mom[:ncr] = m * afm_signs(pos[:ncr], a)
    elif state == 'rough':
        mom[:ncr] = ROUGH_MOMENTS
        rng = np.random.default_rng(ROUGH_SEED)
        direction = rng.normal(size=pos.shape)
        direction /= np.linalg.norm(direction, axis=1)[:, None]
        pos = pos + direction * rng.uniform(0.0, ROUGH_MAX_DISP, size=(len(pos), 1))
    else:
        raise ValueError(state)
    return symbols, cell, pos, mom


def supercell_state(state: str, a: float = A0, m: float = 2.5):
    """16-atom 2x1x1 cell: 'fm16' (all Cr +m) or 'rand16' (random 4 up / 4 down, fixed seed)."""
    symbols, cell, pos = cubic_cell(a, (2, 1, 1))
    ncr = symbols.count('Cr')
    mom = np.zeros(len(symbols))
    if state == 'fm16':
        mom[:ncr] = m
    elif state == 'rand16':
        signs = np.array([1.0] * 4 + [-1.0] * 4)
        np.random.default_rng(SUPERCELL_SEED).shuffle(signs)
        mom[:ncr] = m * signs
    else:
        raise ValueError(state)
    return symbols, cell, pos, mom


# ---------------------------------------------------------------- k-meshes


def parse_kmesh(spec: str) -> tuple[tuple[int, int, int], tuple[tuple[float, float, float], ...]]:
    """'2s' -> MP 2x2x2 shifted by (1/2,1/2,1/2); '3g' -> 3x3x3 unshifted; '1x2x2s' -> 1x2x2 shifted."""
    m = re.fullmatch(r'(\d+)(?:x(\d+)x(\d+))?([sg])', spec)
    if not m:
        raise argparse.ArgumentTypeError(f'k-mesh {spec!r}: use e.g. 2s, 3g or 1x2x2s')
    n = int(m.group(1))
    mesh = (n, int(m.group(2)), int(m.group(3))) if m.group(2) else (n, n, n)
    shift = (0.5, 0.5, 0.5) if m.group(4) == 's' else (0.0, 0.0, 0.0)
    return mesh, (shift,)


# ---------------------------------------------------------------- running and parsing


def tag_suffix(tolvrs: float = DEFAULT_TOLVRS, diemix: float | None = None) -> str:
    """Cache-tag suffix: empty at the defaults, '_tv1e-08' for another tolvrs, '_dm0.3' for a diemix."""
    out = ''
    if tolvrs != DEFAULT_TOLVRS:
        out += f'_tv{tolvrs:g}'
    if diemix is not None:
        out += f'_dm{diemix:g}'
    return out


def prepare_pseudos(workdir: Path) -> Path:
    psp = workdir / 'psp'
    psp.mkdir(parents=True, exist_ok=True)
    for el, name in PSEUDOS.items():
        if not (psp / name).exists():
            with gzip.open(GPAW_SETUPS / f'{el}.LDA.gz', 'rb') as src, open(psp / name, 'wb') as dst:
                shutil.copyfileobj(src, dst)
    return psp


def settings_for(
    ecut: float, kspec: str, tolvrs: float = DEFAULT_TOLVRS, nstep: int = DEFAULT_NSTEP, diemix: float | None = None
) -> CdftSettings:
    mesh, shifts = parse_kmesh(kspec)
    return CdftSettings(
        ecut=ecut,
        kmesh=mesh,
        shifts=shifts,
        ratsph=RATSPH,
        constrained=CONSTRAINED,
        nstep=nstep,
        tolvrs=tolvrs,
        iscf=7,
        diemix=diemix,
        dftu=DFTU,
        pawecutdg=2 * ecut,
    )


def _cpu_wall(text: str) -> tuple[float | None, float | None]:
    m = re.search(r'Overall time at end \(sec\)\s*:\s*cpu=\s*(\S+)\s+wall=\s*(\S+)', text)
    return (float(m.group(1)), float(m.group(2))) if m else (None, None)


def _nkpt(text: str) -> int | None:
    m = re.search(r'^\s+nkpt\s+(\d+)\s*$', text, flags=re.M)
    return int(m.group(1)) if m else None


def run_abinit(
    tag: str,
    structure,
    settings: CdftSettings,
    workdir: Path,
    meta: dict,
    force: bool = False,
    cached_only: bool = False,
) -> dict | None:
    """Run (or re-read) one cDFT calculation; return its record (see the module docstring for units)."""
    symbols, cell, pos, targets = structure
    targets = np.asarray(targets, float)
    flip = needs_spin_flip(symbols, targets, CONSTRAINED)
    run_targets = -targets if flip else targets
    text_in = write_cdft_input(symbols, cell, pos, run_targets, PSEUDOS, ZNUCL, settings)
    rundir = workdir / tag
    abi, abo, log = rundir / 'run.abi', rundir / 'run.abo', rundir / 'run.log'
    cached = (
        not force
        and abi.exists()
        and abi.read_text() == text_in
        and abo.exists()
        and 'Calculation completed' in abo.read_text()
    )
    wall = None
    if not cached and cached_only:
        return None
    if not cached:
        if rundir.exists():
            shutil.rmtree(rundir)
        rundir.mkdir(parents=True)
        abi.write_text(text_in)
        for name in PSEUDOS.values():
            (rundir / name).symlink_to(workdir / 'psp' / name)
        env = dict(os.environ, OMP_NUM_THREADS='1')
        t0 = time.time()
        print(f'[run] {tag} ...', flush=True)
        with open(log, 'w') as fh:
            rc = subprocess.run(
                ['nice', '-n', '5', 'abinit', 'run.abi'], cwd=rundir, stdout=fh, stderr=subprocess.STDOUT, env=env
            ).returncode
        wall = time.time() - t0
        (rundir / 'rc').write_text(str(rc))
    text = abo.read_text() if abo.exists() else ''
    out = parse_abo(text, log.read_text() if log.exists() else None)
    sign = -1.0 if flip else 1.0
    cpu, abinit_wall = _cpu_wall(text)
    nat = len(symbols)
    mask = np.array([s in CONSTRAINED for s in symbols])
    rec = dict(meta)
    rec.update(
        tag=tag,
        tolvrs=settings.tolvrs,
        nstep=settings.nstep,
        diemix=settings.diemix,
        natom=nat,
        symbols=list(symbols),
        ecut=settings.ecut,
        pawecutdg=settings.pawecutdg,
        kmesh=list(settings.kmesh),
        shift=list(settings.shifts[0]),
        nkpt_irred=_nkpt(text),
        targets=targets.tolist(),
        spin_flipped=flip,
        completed=out.completed,
        scf_converged=out.scf_converged,
        scf_steps=out.scf_steps,
        errors=out.errors,
        cpu_s=cpu,
        wall_s=abinit_wall if abinit_wall is not None else wall,
        cell=np.asarray(cell).tolist(),
        positions=np.asarray(pos).tolist(),
    )
    if out.energy is not None:
        rec['energy'] = out.energy
        rec['energy_per_atom'] = out.energy / nat
    if out.forces is not None:
        rec['forces'] = out.forces.tolist()
    if out.stress is not None:
        stress = out.stress * EV_A3_GPA
        rec['stress_GPa'] = stress.tolist()
        rec['pressure_GPa'] = float(-stress[:3].mean())
    if out.moments is not None:
        moments = sign * out.moments
        rec['moments'] = moments.tolist()
        rec['max_moment_error'] = float(np.max(np.abs(moments[mask] - targets[mask])))
    if out.mag_forces is not None:
        rec['T'] = (sign * out.mag_forces).tolist()
    rec['ok'] = bool(
        out.completed and out.scf_converged and rec.get('max_moment_error', 1.0) < MOMENT_TOL and 'energy' in rec
    )
    status = 'ok' if rec['ok'] else 'FLAGGED'
    print(
        f'[done] {tag}: {status} E/atom={rec.get("energy_per_atom", float("nan")):.5f} eV '
        f'steps={out.scf_steps} cpu={cpu} s nkpt={rec["nkpt_irred"]} dm={rec.get("max_moment_error")}',
        flush=True,
    )
    return rec


# ---------------------------------------------------------------- derived quantities


def _cr(rec: dict) -> list[int]:
    return [i for i, s in enumerate(rec['symbols']) if s == 'Cr']


def t_cr(rec: dict) -> list[float]:
    return [rec['T'][i] for i in _cr(rec)]


def compare(sets: dict[str, dict[str, dict]], ref_key: str) -> dict[str, dict]:
    """Per setting: the figures of the states present and their deviations from the setting ``ref_key``.

    ``sets``: setting -> {'fm': rec, 'afm': rec, 'rough': rec} (any subset). A deviation is computed
    only from the states present (and usable) in both the setting and the reference.
    """
    ref = {k: r for k, r in sets.get(ref_key, {}).items() if 'energy' in r}
    table = {}
    for key, s in sets.items():
        s = {k: r for k, r in s.items() if 'energy' in r}
        row = {
            'states': sorted(s),
            'all_ok': all(r['ok'] for r in s.values()),
            'scf_steps': {k: r['scf_steps'] for k, r in s.items()},
            'cpu_s': {k: r['cpu_s'] for k, r in s.items()},
            'nkpt_irred': {k: r['nkpt_irred'] for k, r in s.items()},
            'E_per_atom': {k: r['energy_per_atom'] for k, r in s.items()},
            'T_cr': {k: t_cr(r) for k, r in s.items()},
            'pressure_GPa': {k: r['pressure_GPa'] for k, r in s.items()},
            'stress_GPa': {k: r['stress_GPa'] for k, r in s.items()},
        }
        for other in ('afm', 'rough'):
            if 'fm' in s and other in s:
                row[f'dE_{other}_fm_meV_atom'] = 1000 * (s[other]['energy_per_atom'] - s['fm']['energy_per_atom'])
        if 'rough' in s:
            row['max_force_rough'] = float(np.max(np.linalg.norm(s['rough']['forces'], axis=1)))
        both = [k for k in ('fm', 'afm', 'rough') if k in s and k in ref]
        if both:
            v = {'ref': ref_key, 'states_compared': both}
            if 'fm' in both:
                v['dE_fm_abs_meV_atom'] = 1000 * (s['fm']['energy_per_atom'] - ref['fm']['energy_per_atom'])
            d_rel = []
            for other in ('afm', 'rough'):
                if 'fm' in both and other in both:
                    d = row[f'dE_{other}_fm_meV_atom'] - 1000 * (
                        ref[other]['energy_per_atom'] - ref['fm']['energy_per_atom']
                    )
                    v[f'd_dE_{other}_fm_meV_atom'] = d
                    d_rel.append(d)
            if d_rel:
                v['max_rel_energy_err_meV_atom'] = float(np.max(np.abs(d_rel)))
            v['max_T_err'] = float(max(np.max(np.abs(np.subtract(t_cr(s[k]), t_cr(ref[k])))) for k in both))
            v['max_stress_err_GPa'] = float(
                max(np.max(np.abs(np.subtract(s[k]['stress_GPa'], ref[k]['stress_GPa']))) for k in both)
            )
            for k in both:
                v[f'd_pressure_{k}_GPa'] = s[k]['pressure_GPa'] - ref[k]['pressure_GPa']
            if 'rough' in both:
                v['max_force_err_rough'] = float(
                    np.max(np.linalg.norm(np.subtract(s['rough']['forces'], ref['rough']['forces']), axis=1))
                )
            row['vs_ref'] = v
        table[key] = row
    return table


def passes(row: dict, tol: dict) -> dict:
    """Which tolerances a setting meets vs the reference (only for the quantities that could be compared)."""
    v = row.get('vs_ref', {})
    checks = {
        'energy': ('max_rel_energy_err_meV_atom', 'energy_meV_atom'),
        'T': ('max_T_err', 'T_eV_muB'),
        'force': ('max_force_err_rough', 'force_eV_A'),
        'stress': ('max_stress_err_GPa', 'stress_GPa'),
    }
    return {name: bool(v[key] < tol[t]) for name, (key, t) in checks.items() if key in v}


def em_minimum(ms: list[float], ts: list[float], es: list[float]) -> dict:
    """Where T = -dE/dm changes sign from + to - (linear interpolation), and the lowest sampled energy."""
    out = {'lowest_sampled_m': ms[int(np.argmin(es))], 'sign_changes': []}
    for i in range(len(ms) - 1):
        if ts[i] > 0 >= ts[i + 1]:
            m0 = ms[i] + ts[i] * (ms[i + 1] - ms[i]) / (ts[i] - ts[i + 1])
            out['sign_changes'].append(float(m0))
    if len(ms) < 3:
        return out
    # quadratic fit of the three lowest consecutive points as a second estimate
    k = int(np.clip(np.argmin(es), 1, len(ms) - 2))
    c = np.polyfit(ms[k - 1 : k + 2], es[k - 1 : k + 2], 2)
    out['parabola_m'] = float(-c[1] / (2 * c[0])) if c[0] > 0 else None
    return out


# ---------------------------------------------------------------- the study


class Study:
    def __init__(self, args):
        self.args = args
        self.workdir = Path(args.workdir)
        prepare_pseudos(self.workdir)
        self.out = Path(args.output)
        self.data = json.loads(self.out.read_text()) if self.out.exists() else {}
        self.data.setdefault('runs', {})
        self.data.setdefault('analysis', {})
        self.data['meta'] = {
            'system': 'B1 CrN, 8-atom cubic cell (Cr first, then N), a = 4.15 A unless stated',
            'code': 'ABINIT 9.6.2 (Debian), one process, OMP_NUM_THREADS=1, nice 5, 2 cores shared',
            'pseudos': 'gpaw-data LDA PAW setups Cr.LDA, N.LDA',
            'dft_u': 'usepawu 1, U = 3 eV, J = 0 on Cr d (l = 2)',
            'constraint': 'constraint_kind 1 on Cr and N (N target 0); ratsph Cr 2.3, N 1.2 bohr; ratsm 0.05',
            'scf': (
                'occopt 7, tsmear 0.01 Ha, iscf 7, nstep 200, tolvrs 1e-10, pawecutdg = 2 ecut, unless a run '
                "says otherwise (its 'tolvrs', 'nstep', 'diemix'; tag suffix _tv<tolvrs>, _dm<diemix>)"
            ),
            'rough': (
                f'AFM (001) with Cr moments {list(ROUGH_MOMENTS)} mu_B, every atom displaced by a random vector '
                f'of length uniform in [0, {ROUGH_MAX_DISP}] A (numpy default_rng seed {ROUGH_SEED})'
            ),
            'kmesh_names': "'2s' = MP 2x2x2 shifted by (1/2,1/2,1/2), '3g' = 3x3x3 unshifted",
            'units': (
                'eV, meV/atom, eV/A, GPa (ASE sign, Voigt xx yy zz yz xz xy; P = -trace/3), mu_B, '
                'T = -dE/dm eV/mu_B, A, CPU s'
            ),
            'moment_tolerance_muB': MOMENT_TOL,
        }

    def save(self):
        self.out.write_text(json.dumps(self.data, indent=1, sort_keys=False) + '\n')

    @property
    def suffix(self) -> str:
        return tag_suffix(self.args.tolvrs)

    def run(self, tag, structure, ecut, kspec, diemix=None, **meta):
        """One run at --tolvrs / --nstep (and ``diemix``); the tag gets the non-default suffix."""
        settings = settings_for(ecut, kspec, self.args.tolvrs, self.args.nstep, diemix)
        tag = tag + tag_suffix(self.args.tolvrs, diemix)
        meta.update(kspec=kspec)
        rec = run_abinit(
            tag, structure, settings, self.workdir, meta, force=self.args.force, cached_only=self.args.cached_only
        )
        if rec is None:  # not run yet and --cached-only
            return self.data['runs'].get(tag, {'tag': tag, 'ok': False, 'missing': True})
        self.data['runs'][tag] = rec
        self.save()
        return rec

    def three_states(self, ecut, kspec, a=A0, m=2.5):
        recs = {}
        for state in self.args.states:
            tag = f'{state}_m{m}_a{a}_e{ecut:g}_k{kspec}' if state != 'rough' else f'rough_a{a}_e{ecut:g}_k{kspec}'
            recs[state] = self.run(tag, make_state(state, a, m), ecut, kspec, state=state, a=a, m=m)
        return recs

    def _in_scan(self, r, kspec, tolvrs=None):
        tolvrs = self.args.tolvrs if tolvrs is None else tolvrs
        return (
            r.get('kspec') == kspec
            and r.get('a') == A0
            and r.get('natom') == 8
            and r.get('m') == 2.5
            and r.get('tolvrs', DEFAULT_TOLVRS) == tolvrs
            and r.get('diemix') is None
        )

    def _states(self, ecut, kspec, tolvrs=None):
        """The cached FM, AFM (m = 2.5) and rough runs of one (ecut, k-mesh, tolvrs) at a = 4.15 A."""
        return {
            r['state']: r
            for r in self.data['runs'].values()
            if self._in_scan(r, kspec, tolvrs) and r['ecut'] == ecut and r['state'] in ('fm', 'afm', 'rough')
        }

    def part_cutoff(self):
        for ecut in self.args.ecuts:
            self.three_states(ecut, self.args.kmesh)
        # every cached run of the scan enters the table, not only those of this call
        ecuts = sorted({r['ecut'] for r in self.data['runs'].values() if self._in_scan(r, kspec=self.args.kmesh)})
        sets = {f'{e:g}': self._states(ecut=e, kspec=self.args.kmesh) for e in ecuts}
        ref = f'{max(ecuts):g}'
        table = compare(sets, ref)
        for row in table.values():
            row['passes'] = passes(row, self.tolerances())
        key = 'cutoff' + self.suffix
        self.data['analysis'][key] = {
            'kmesh': self.args.kmesh,
            'tolvrs': self.args.tolvrs,
            'ref_ecut': ref,
            'rows': table,
        }
        self.save()

    def part_tolvrs(self):
        """FM, AFM (m = 2.5) and rough at --ecut / --kmesh with --tolvrs, compared with the default tolvrs."""
        if self.args.tolvrs == DEFAULT_TOLVRS:
            raise SystemExit('--part tolvrs compares --tolvrs with the default 1e-10: give another --tolvrs')
        ecut, kspec = self.args.ecut, self.args.kmesh
        loose = self.three_states(ecut, kspec)
        tight = self._states(ecut, kspec, tolvrs=DEFAULT_TOLVRS)
        rows = {}
        for state, r in loose.items():
            ref = tight.get(state)
            if ref is None or 'energy' not in r or 'energy' not in ref:
                rows[state] = {'missing': True}
                continue
            cr = _cr(r)
            dT = np.subtract(r['T'], ref['T'])
            rows[state] = {
                'ok': r['ok'],
                'ref_ok': ref['ok'],
                'dE_meV_atom': 1000 * (r['energy_per_atom'] - ref['energy_per_atom']),
                'max_dF_eV_A': float(np.max(np.linalg.norm(np.subtract(r['forces'], ref['forces']), axis=1))),
                'max_dT_cr_eV_muB': float(np.max(np.abs(dT[cr]))),
                'max_dT_all_eV_muB': float(np.max(np.abs(dT))),
                'max_dstress_GPa': float(np.max(np.abs(np.subtract(r['stress_GPa'], ref['stress_GPa'])))),
                'd_pressure_GPa': r['pressure_GPa'] - ref['pressure_GPa'],
                'max_dmoment_muB': float(np.max(np.abs(np.subtract(r['moments'], ref['moments'])))),
                'scf_steps': r['scf_steps'],
                'ref_scf_steps': ref['scf_steps'],
                'cpu_s': r['cpu_s'],
                'ref_cpu_s': ref['cpu_s'],
            }
        good = [v for v in rows.values() if not v.get('missing')]
        summary = {}
        if good:
            summary = {
                'max_abs_dE_meV_atom': max(abs(v['dE_meV_atom']) for v in good),
                'max_dF_eV_A': max(v['max_dF_eV_A'] for v in good),
                'max_dT_eV_muB': max(v['max_dT_all_eV_muB'] for v in good),
                'max_dstress_GPa': max(v['max_dstress_GPa'] for v in good),
            }
            summary['loose_acceptable'] = bool(summary['max_dF_eV_A'] < 0.005 and summary['max_dT_eV_muB'] < 0.005)
        self.data['analysis'][f'tolvrs_e{ecut:g}_k{kspec}'] = {
            'loose': self.args.tolvrs,
            'tight': DEFAULT_TOLVRS,
            'criterion': 'loose acceptable if max |dF| < 0.005 eV/A and max |dT| < 0.005 eV/mu_B (all atoms)',
            'rows': rows,
            'summary': summary,
        }
        self.save()

    def part_kpoints(self):
        for kspec in self.args.kmeshes:
            self.three_states(self.args.ecut, kspec)
        sets = {k: self._states(ecut=self.args.ecut, kspec=k) for k in self.args.kmeshes}
        ref = self.args.kmeshes[-1]
        table = compare(sets, ref)
        for row in table.values():
            row['passes'] = passes(row, self.tolerances())
        self.data['analysis']['kpoints'] = {'ecut': self.args.ecut, 'ref_kmesh': ref, 'rows': table}
        self.save()

    def part_em(self):
        res = self.data['analysis'].setdefault('em', {})
        for kspec in self.args.kmeshes:
            for state in ('fm', 'afm'):
                rows = []
                if state not in self.args.states:
                    continue
                for m in self.args.moments:
                    tag = f'{state}_m{m:g}_a{A0}_e{self.args.ecut:g}_k{kspec}'
                    tight = self.data['runs'].get(tag)  # the same point at the default (tightest) tolvrs
                    first = None
                    if (
                        self.args.tolvrs > DEFAULT_TOLVRS
                        and tight is not None
                        and tight.get('ok')
                        and tight.get('tolvrs', DEFAULT_TOLVRS) == DEFAULT_TOLVRS
                    ):
                        rec = tight  # converged to 1e-10, hence also to the looser tolvrs: not rerun
                    else:
                        rec = self.run(tag, make_state(state, A0, m), self.args.ecut, kspec, state=state, a=A0, m=m)
                        if not rec.get('ok') and self.args.retry_diemix is not None:
                            first = {k: rec.get(k) for k in ('tag', 'ok', 'scf_converged', 'scf_steps', 'cpu_s')}
                            first['max_moment_error'] = rec.get('max_moment_error')
                            first['energy_per_atom'] = rec.get('energy_per_atom')
                            rec = self.run(
                                tag,
                                make_state(state, A0, m),
                                self.args.ecut,
                                kspec,
                                diemix=self.args.retry_diemix,
                                state=state,
                                a=A0,
                                m=m,
                            )
                    if 'energy' not in rec:
                        rows.append({'m': m, 'ok': False, 'tag': rec.get('tag'), 'first_attempt': first})
                        continue
                    ncr = len(_cr(rec))
                    rows.append(
                        {
                            'm': m,
                            'tag': rec['tag'],
                            'tolvrs': rec.get('tolvrs', DEFAULT_TOLVRS),
                            'diemix': rec.get('diemix'),
                            'first_attempt': first,
                            'scf_converged': rec['scf_converged'],
                            'max_moment_error': rec.get('max_moment_error'),
                            'ok': rec['ok'],
                            'scf_steps': rec['scf_steps'],
                            'cpu_s': rec['cpu_s'],
                            'E_per_atom': rec['energy_per_atom'],
                            'T_cr': t_cr(rec)[0],
                            'T_cr_all': t_cr(rec),
                            'T_n': rec['T'][ncr:],
                            'moments_cr': rec['moments'][:ncr],
                            'moments_n': rec['moments'][ncr:],
                            'pressure_GPa': rec['pressure_GPa'],
                        }
                    )
                good = [r for r in rows if r.get('ok')]
                ms = [r['m'] for r in good]
                # T of the +m Cr atom; E per atom
                mini = em_minimum(ms, [r['T_cr'] for r in good], [r['E_per_atom'] for r in good]) if good else {}
                key = f'{state}_e{self.args.ecut:g}_k{kspec}{self.suffix}'
                old = {r['m']: r for r in res.get(key, {}).get('rows', [])}
                old.update({r['m']: r for r in rows})  # merge with the points of earlier calls
                rows = [old[m] for m in sorted(old)]
                good = [r for r in rows if r.get('ok')]
                ms = [r['m'] for r in good]
                mini = em_minimum(ms, [r['T_cr'] for r in good], [r['E_per_atom'] for r in good]) if good else {}
                res[key] = {'rows': rows, 'minimum': mini}
                self.save()

    def part_eos(self):
        from ase.eos import EquationOfState

        res = self.data['analysis'].setdefault('eos', {})
        for state, m in (('fm', self.args.m_fm), ('afm', self.args.m_afm)):
            rows = []
            for a in self.args.lattice:
                tag = f'{state}_m{m:g}_a{a:g}_e{self.args.ecut:g}_k{self.args.kmesh}'
                rec = self.run(tag, make_state(state, a, m), self.args.ecut, self.args.kmesh, state=state, a=a, m=m)
                rows.append(
                    {
                        'a': a,
                        'ok': rec.get('ok'),
                        'scf_steps': rec.get('scf_steps'),
                        'cpu_s': rec.get('cpu_s'),
                        'E_per_atom': rec.get('energy_per_atom'),
                        'pressure_GPa': rec.get('pressure_GPa'),
                        'T_cr': t_cr(rec)[0] if 'T' in rec else None,
                    }
                )
            good = [r for r in rows if r['ok']]
            fit = {}
            if len(good) >= 5:
                vol = [r['a'] ** 3 / 8 for r in good]  # A^3 per atom
                eos = EquationOfState(vol, [r['E_per_atom'] for r in good], eos='birchmurnaghan')
                v0, e0, b = eos.fit()
                fit = {'V0_A3_atom': v0, 'a0_A': (8 * v0) ** (1 / 3), 'E0_eV_atom': e0, 'B_GPa': b * EV_A3_GPA}
            res[f'{state}_m{m:g}_e{self.args.ecut:g}_k{self.args.kmesh}'] = {
                'state': state,
                'm': m,
                'rows': rows,
                'fit': fit,
            }
            self.save()

    def part_supercell(self):
        res = {}
        for state in ('rand16', 'fm16'):
            tag = f'{state}_m2.5_a{A0}_e{self.args.ecut:g}_k{self.args.kmesh16}'
            rec = self.run(tag, supercell_state(state), self.args.ecut, self.args.kmesh16, state=state, a=A0, m=2.5)
            res[state] = {
                k: rec.get(k)
                for k in ('ok', 'scf_steps', 'cpu_s', 'wall_s', 'nkpt_irred', 'energy_per_atom', 'targets')
            }
            res[state]['T_cr'] = t_cr(rec) if 'T' in rec else None
        ref_tag = f'fm_m2.5_a{A0}_e{self.args.ecut:g}_k{self.args.kmesh}'
        ref = self.data['runs'].get(ref_tag) or self.run(
            ref_tag, make_state('fm', A0, 2.5), self.args.ecut, self.args.kmesh, state='fm', a=A0, m=2.5
        )
        res['fm8'] = {k: ref.get(k) for k in ('ok', 'scf_steps', 'cpu_s', 'nkpt_irred', 'energy_per_atom')}
        if res['fm16'].get('energy_per_atom') is not None:
            res['fm16_minus_fm8_meV_atom'] = 1000 * (res['fm16']['energy_per_atom'] - ref['energy_per_atom'])
            res['rand16_minus_fm16_meV_atom'] = 1000 * (
                res['rand16']['energy_per_atom'] - res['fm16']['energy_per_atom']
            )
        self.data['analysis']['supercell'] = res
        self.save()

    def tolerances(self):
        return {'energy_meV_atom': 2.0, 'T_eV_muB': 0.02, 'force_eV_A': 0.02, 'stress_GPa': 2.0}


def print_report(data: dict):
    """One markdown row per run: setting, state, energy, T_Cr, pressure, steps, CPU s, flags."""
    print('| run | ok | steps | nkpt | CPU s | E/atom eV | T_Cr eV/mu_B | P GPa | max F eV/A | m_N mu_B |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for tag, r in sorted(data['runs'].items()):
        if 'energy' not in r:
            print(f'| {tag} | {r.get("ok")} | {r.get("scf_steps")} | | {r.get("cpu_s")} | no energy | | | | |')
            continue
        ts = ' '.join(f'{t:+.3f}' for t in t_cr(r))
        mn = max(abs(m) for m, s in zip(r['moments'], r['symbols']) if s == 'N')
        fmax = float(np.max(np.linalg.norm(r['forces'], axis=1)))
        print(
            f'| {tag} | {r["ok"]} | {r["scf_steps"]} | {r["nkpt_irred"]} | {r["cpu_s"]} | {r["energy_per_atom"]:.5f} '
            f'| {ts} | {r["pressure_GPa"]:.1f} | {fmax:.3f} | {mn:.1e} |'
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--part', required=True, choices=['cutoff', 'tolvrs', 'kpoints', 'em', 'eos', 'supercell', 'report'])
    p.add_argument('--workdir', default='/tmp/conv', help='scratch folder for the runs')
    p.add_argument('--output', default=str(Path(__file__).resolve().parents[1] / 'docs' / 'convergence.json'))
    p.add_argument('--ecuts', type=float, nargs='+', default=[12, 15, 20, 25, 30], help='Ha (cutoff part)')
    p.add_argument('--ecut', type=float, default=15, help='Ha (other parts)')
    p.add_argument('--kmesh', default='2s', help="k-mesh of the cutoff, eos and 8-atom reference runs ('2s', '4s')")
    p.add_argument('--kmeshes', nargs='+', default=['2s', '3g', '4s'], help='k-meshes (kpoints and em parts)')
    p.add_argument('--kmesh16', default='1x2x2s', help='k-mesh of the 16-atom cell')
    p.add_argument('--moments', type=float, nargs='+', default=[1.5, 2.0, 2.5, 2.75, 3.0, 3.25], help='mu_B')
    p.add_argument('--m-fm', type=float, default=2.75, help='FM moment of the E(V) scan, mu_B')
    p.add_argument('--m-afm', type=float, default=2.5, help='AFM moment of the E(V) scan, mu_B')
    p.add_argument('--lattice', type=float, nargs='+', default=[4.05, 4.10, 4.15, 4.20, 4.25], help='A')
    p.add_argument(
        '--states', nargs='+', default=['fm', 'afm', 'rough'], help='states to run (cutoff, kpoints, em parts)'
    )
    p.add_argument(
        '--tolvrs',
        type=float,
        default=DEFAULT_TOLVRS,
        help='SCF tolerance on the potential residual (default 1e-10); another value adds _tv<value> to the tags',
    )
    p.add_argument('--nstep', type=int, default=DEFAULT_NSTEP, help='max SCF steps (not part of the cache tag)')
    p.add_argument(
        '--retry-diemix',
        type=float,
        default=None,
        help='em part: rerun an unconverged point once with this diemix (tag suffix _dm<value>)',
    )
    p.add_argument('--cached-only', action='store_true', help='never start ABINIT: use the finished runs only')
    p.add_argument('--force', action='store_true', help='rerun even when a complete cached output exists')
    args = p.parse_args(argv)
    for spec in [args.kmesh, args.kmesh16, *args.kmeshes]:
        parse_kmesh(spec)
    if args.part == 'report':
        print_report(json.loads(Path(args.output).read_text()))
        return
    study = Study(args)
    getattr(study, f'part_{args.part}')()
    study.save()


if __name__ == '__main__':
    main()
