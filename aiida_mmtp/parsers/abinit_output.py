"""Read the main text output (``.abo``) of a collinear constrained-DFT run of ABINIT 9.x.

Plain Python (no AiiDA): the AiiDA parser turns this into nodes and exit codes.

Where the numbers are (see shared/docs/cdft.md): the per-atom moments only in
the table "Integrated electronic and magnetization densities in atomic
spheres" (column ``Diff(up-dn)``), and energy, forces, stress and the cDFT
gradient ``grspin`` (= +dE/dm, Ha/mu_B) in the echo of variables after the
run. Units out: eV, eV/A, eV/A^3 (ASE sign convention: ABINIT's ``strten``
has the same sign and Voigt order), mu_B, eV/mu_B (T = -dE/dm).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

__all__ = ['HA_EV', 'BOHR_A', 'AbinitOutput', 'AbinitOutputError', 'parse_abo']

#: ABINIT 9.6.2's own conversion factors (defs_basis.F90)
HA_EV = 27.21138386
BOHR_A = 0.52917720859

_FLOAT = r'[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[EeDd][-+]?\d+)?'
_ECHO_LINE = re.compile(r'^\s{1,20}([a-z][a-z0-9_]*)\s+(' + _FLOAT + r'(?:\s+' + _FLOAT + r')*)\s*$')
_NUMBERS_ONLY = re.compile(r'^\s+(' + _FLOAT + r'(?:\s+' + _FLOAT + r')*)\s*$')


class AbinitOutputError(ValueError):
    """The output cannot be read (no such file, truncated, or missing a block we need)."""


@dataclass
class AbinitOutput:
    """What one run printed. Arrays are per atom in input order; None where absent."""

    completed: bool = False
    scf_converged: bool = False
    scf_steps: int | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    version: str | None = None
    energy: float | None = None  # eV (free energy with smearing)
    forces: np.ndarray | None = None  # (N, 3) eV/A
    stress: np.ndarray | None = None  # (6,) eV/A^3, ASE convention, Voigt xx yy zz yz xz xy
    moments: np.ndarray | None = None  # (N,) mu_B, Diff(up-dn) in the atomic spheres
    dedm: np.ndarray | None = None  # (N,) +dE/dm, eV/mu_B (from grspin z)
    targets: np.ndarray | None = None  # (N,) target moments, spinat z, mu_B

    @property
    def mag_forces(self) -> np.ndarray | None:
        """T = -dE/dm, eV/mu_B."""
        return None if self.dedm is None else -self.dedm


def _to_float(token: str) -> float:
    return float(token.replace('D', 'E').replace('d', 'e'))


def _echo_blocks(lines: list[str]) -> dict[str, list[float]]:
    """Variables echoed after the run (from '-outvars: echo values of variables after computation')."""
    start = next((k for k, line in enumerate(lines) if 'echo values of variables after computation' in line), None)
    if start is None:
        return {}
    values: dict[str, list[float]] = {}
    current = None
    for line in lines[start + 1 :]:
        if line.startswith('=') or 'Calculation completed' in line or line.strip().startswith('- Timing'):
            break
        m = _ECHO_LINE.match(line)
        if m:
            current = m.group(1)
            values[current] = [_to_float(t) for t in m.group(2).split()]
            continue
        m = _NUMBERS_ONLY.match(line)
        if m and current is not None:
            values[current].extend(_to_float(t) for t in m.group(1).split())
            continue
        current = None
    return values


def _last_table(lines: list[str], title: str) -> list[list[str]] | None:
    """Rows (token lists) of the last table with ``title``, between its header row and the dashed line."""
    starts = [k for k, line in enumerate(lines) if title in line]
    if not starts:
        return None
    rows = []
    k = starts[-1] + 1
    while k < len(lines) and not lines[k].strip().startswith('Atom'):
        k += 1
    for line in lines[k + 1 :]:
        if line.strip().startswith('---') or not line.strip():
            break
        rows.append(line.split())
    return rows


def _spinat_targets(lines: list[str], natom: int) -> np.ndarray | None:
    """Target moments (spinat z) from the echo of the input variables (before the run).

    ABINIT leaves variables at their default out of the echo: with the echo there and no ``spinat``
    in it, every target is 0. None when there is no echo at all.
    """
    echo = next((k for k, line in enumerate(lines) if 'echo values of preprocessed input variables' in line), None)
    if echo is None:
        return None
    end = next((k for k in range(echo + 1, len(lines)) if 'chkinp: Checking input parameters' in lines[k]), len(lines))
    for k, line in enumerate(lines[:end]):
        m = _ECHO_LINE.match(line)
        if m and m.group(1) == 'spinat':
            vals = [_to_float(t) for t in m.group(2).split()]
            j = k + 1
            while len(vals) < 3 * natom and j < len(lines):
                more = _NUMBERS_ONLY.match(lines[j])
                if not more:
                    break
                vals += [_to_float(t) for t in more.group(1).split()]
                j += 1
            if len(vals) >= 3 * natom:
                return np.array(vals[: 3 * natom]).reshape(natom, 3)[:, 2]
            return None
    return np.zeros(natom)


def _errors(lines: list[str]) -> list[str]:
    """Messages of ``--- !ERROR`` blocks (YAML style) and of ``routine: ERROR -`` paragraphs."""
    found = []
    for k, line in enumerate(lines):
        if line.startswith('--- !ERROR'):
            msg = []
            for follow in lines[k + 1 : k + 40]:
                if follow.startswith('...'):
                    break
                msg.append(follow.strip())
            body = ' '.join(msg)
            m = re.search(r'message:\s*\|?\s*(.*?)(?:\s+src_file:|$)', body)
            found.append((m.group(1) if m else body).strip())
        elif re.match(r'^\s*\w+: ERROR -\s*$', line):
            msg = []
            for follow in lines[k + 1 : k + 20]:
                if not follow.strip():
                    break
                msg.append(follow.strip())
            found.append(' '.join(msg))
    return found


def parse_abo(text: str, log: str | None = None) -> AbinitOutput:
    """Parse the text of an ``.abo`` file (and of the run's stdout ``log``, where ABINIT writes its
    ``--- !ERROR`` blocks). Never raises for a failed run: see ``completed`` and ``errors``."""
    lines = text.splitlines()
    out = AbinitOutput()
    m = re.search(r'\.Version\s+(\S+)\s+of ABINIT', text if text else (log or ''))
    out.version = m.group(1) if m else None
    out.completed = 'Calculation completed.' in text
    for message in _errors(lines) + _errors((log or '').splitlines()):
        if message not in out.errors:
            out.errors.append(message)
    for k, line in enumerate(lines):
        if line.startswith('--- !WARNING'):
            mm = re.search(r'message:\s*\|?\s*(.*)', ' '.join(s.strip() for s in lines[k + 1 : k + 8]))
            out.warnings.append(mm.group(1).strip() if mm else '')
    steps = [int(s) for s in re.findall(r'At SCF step\s+(\d+).*=>converged', text)]
    not_enough = 'not enough SCF cycles to converge' in text
    out.scf_converged = bool(steps) and not not_enough
    if steps:
        out.scf_steps = steps[-1]
    else:
        all_steps = re.findall(r'^\s*ETOT\s+(\d+)', text, flags=re.M)
        out.scf_steps = int(all_steps[-1]) if all_steps else None

    echo = _echo_blocks(lines)
    totals = re.findall(r'^total_energy\s*:\s*(' + _FLOAT + ')', text, flags=re.M)  # !EnergyTerms, full precision
    if totals:
        out.energy = _to_float(totals[-1]) * HA_EV
    elif 'etotal' in echo:
        out.energy = echo['etotal'][0] * HA_EV
    if 'fcart' in echo and len(echo['fcart']) % 3 == 0:
        out.forces = np.array(echo['fcart']).reshape(-1, 3) * HA_EV / BOHR_A
    if 'strten' in echo and len(echo['strten']) == 6:
        out.stress = np.array(echo['strten']) * HA_EV / BOHR_A**3
    if 'grspin' in echo and len(echo['grspin']) % 3 == 0:
        out.dedm = np.array(echo['grspin']).reshape(-1, 3)[:, 2] * HA_EV
    rows = _last_table(lines, 'Integrated electronic and magnetization densities in atomic spheres')
    if rows:
        try:
            out.moments = np.array([float(r[5]) for r in rows])
        except (IndexError, ValueError):
            out.moments = None
    natom = next((len(a) for a in (out.moments, out.dedm) if a is not None), None)
    if natom:
        out.targets = _spinat_targets(lines, natom)
    return out
