"""``CdftCalculation``: one collinear constrained-DFT run of ABINIT (entry point ``mmtp.abinit.cdft``).

Inputs: the ``structure`` (written as given: never reduced, atoms never
reordered), the signed target ``moments`` (an ``ArrayData`` with the array
``moments``, shape (N,), mu_B, one per site), a ``kpoints`` mesh, the
``pseudos`` per element and the ``parameters`` (see :data:`PARAMETERS`).
When the constrained targets sum to a negative number, the run is made with
all targets flipped (``spin_flip``) and the parser flips moments and
magnetic forces back: ABINIT 9.6.2 traps mostly negative states in a wrong,
higher-energy solution (shared/docs/cdft.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from aiida import orm
from aiida.common import CalcInfo, CodeInfo
from aiida.common.constants import elements
from aiida.engine import CalcJob
from aiida_pseudo.data.pseudo import PseudoPotentialData

from .abinit_input import CdftSettings, check_sphere_overlap, needs_spin_flip, write_cdft_input

__all__ = [
    'PARAMETERS',
    'CdftCalculation',
    'cdft_settings',
    'check_inputs',
    'check_run',
    'fidelity_key',
    'moments_node',
    'spin_flip_applies',
]

#: Keys of the ``parameters`` input and their defaults (None: required or unset). Energies in Ha, radii in bohr.
PARAMETERS: dict[str, Any] = {
    'ecut': None,  # plane-wave cutoff, Ha (required)
    'ratsph': None,  # {element: sphere radius, bohr} for every element (required)
    'constrained': None,  # elements whose moments are fixed; default: those with a non-zero target
    'occopt': 7,
    'tsmear': 0.01,  # Ha
    'tolvrs': 1e-10,
    'nstep': 150,
    'iscf': 7,
    'magcon_lambda': None,
    'diemac': None,
    'diemix': None,
    'dftu': {},  # {element: [l, U (eV), J (eV)]}
    'pawecutdg': None,  # Ha
    'shiftk': None,  # list of k-mesh shifts; default: the offset of the kpoints node
    'moment_tolerance': 1e-3,  # mu_B: achieved constrained moments further off the target fail the run
    'max_moment': 5.0,  # mu_B: larger targets are refused (ABINIT "converges" unphysical ones silently)
    'spin_flip': True,  # run mostly negative states flipped (see the module docstring)
    'extra': {},  # further ABINIT variables, written as given
}
#: Variables the CalcJob writes itself: ``extra`` may not set them.
MANAGED = (
    'chksymtnons',
    'maxnsym',
    'natom',
    'ntypat',
    'znucl',
    'typat',
    'acell',
    'rprim',
    'xred',
    'xcart',
    'nsppol',
    'nspden',
    'spinat',
    'constraint_kind',
    'ngkpt',
    'kptopt',
    'nshiftk',
    'shiftk',
    'pseudos',
    'pp_dirpath',
    'chkprim',
)
#: Parameters that change the labels (the fidelity key); nstep, tolvrs and mixing only change how they are reached.
FIDELITY_PARAMETERS = ('ecut', 'ratsph', 'constrained', 'occopt', 'tsmear', 'dftu', 'pawecutdg', 'iscf')
_Z = {values['symbol']: z for z, values in elements.items()}


def moments_node(moments) -> orm.ArrayData:
    """An ``ArrayData`` with the array ``moments`` (N,): the signed target moment of each site, mu_B."""
    node = orm.ArrayData()
    node.set_array('moments', np.asarray(moments, dtype=float).reshape(-1))
    return node


def _elements(structure: orm.StructureData) -> list[str]:
    """Element symbol per site; a kind must be one element (no alloys, no vacancies)."""
    for kind in structure.kinds:
        if kind.is_alloy or kind.has_vacancies:
            raise ValueError(f'kind {kind.name} is an alloy or has vacancies: cDFT needs one element per site')
    kinds = {kind.name: kind.symbol for kind in structure.kinds}
    return [kinds[site.kind_name] for site in structure.sites]


def cdft_settings(parameters: Mapping, symbols: list[str], moments: np.ndarray, mesh, offset) -> CdftSettings:
    """The :class:`CdftSettings` of a run; ValueError naming the first bad or unknown key."""
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise ValueError(f'unknown parameters: {", ".join(unknown)} (known: {", ".join(PARAMETERS)})')
    p = {**PARAMETERS, **parameters}
    for key in ('ecut', 'ratsph'):
        if p[key] is None:
            raise ValueError(f'the parameter `{key}` is required')
    species = list(dict.fromkeys(symbols))
    missing = [s for s in species if s not in p['ratsph']]
    if missing:
        raise ValueError(f'no sphere radius (ratsph) for {", ".join(missing)}')
    moments = np.asarray(moments, dtype=float)
    constrained = p['constrained']
    if constrained is None:
        constrained = [s for s in species if np.any(np.abs(moments[np.array(symbols) == s]) > 0)]
    absent = [s for s in constrained if s not in species]
    if absent:
        raise ValueError(f'constrained element {", ".join(absent)} is not in the structure')
    managed = sorted(set(p['extra']) & set(MANAGED + tuple(PARAMETERS)))
    if managed:
        raise ValueError(f'`extra` may not set {", ".join(managed)}: the CalcJob writes it')
    dftu = {}
    for element, value in p['dftu'].items():
        if element not in species or len(value) != 3:
            raise ValueError(f'dftu for {element}: give [l, U (eV), J (eV)] for an element of the structure')
        dftu[element] = (int(value[0]), float(value[1]), float(value[2]))
    shifts = p['shiftk'] if p['shiftk'] is not None else [tuple(offset)]
    return CdftSettings(
        ecut=float(p['ecut']),
        kmesh=tuple(int(k) for k in mesh),
        ratsph={s: float(p['ratsph'][s]) for s in species},
        constrained=list(constrained),
        shifts=[tuple(float(x) for x in s) for s in shifts],
        occopt=int(p['occopt']),
        tsmear=float(p['tsmear']),
        tolvrs=float(p['tolvrs']),
        nstep=int(p['nstep']),
        iscf=int(p['iscf']),
        magcon_lambda=p['magcon_lambda'],
        diemac=p['diemac'],
        diemix=p['diemix'],
        dftu=dftu,
        pawecutdg=p['pawecutdg'],
        extra={k: str(v) for k, v in p['extra'].items()},
    )


def spin_flip_applies(parameters: Mapping, symbols: list[str], moments: np.ndarray) -> bool:
    """Whether the run is made with all targets flipped (``spin_flip`` on and the constrained targets sum < 0)."""
    if not parameters.get('spin_flip', PARAMETERS['spin_flip']):
        return False
    constrained = parameters.get('constrained')
    if constrained is None:
        constrained = sorted({s for s, m in zip(symbols, moments) if abs(m) > 0})
    return needs_spin_flip(symbols, moments, constrained)


_PAW_RADII: dict[str, float | None] = {}  # md5 -> PAW radius (bohr): each dataset is read once


def paw_radius(pseudo: PseudoPotentialData) -> float | None:
    """PAW radius in bohr of a PAW XML dataset (None for norm-conserving files).

    ``<PAW_radius rpaw=...>`` (JTH), else the largest ``rc`` of its states (GPAW), as ABINIT takes it.
    """
    if not pseudo.filename.lower().endswith('.xml'):
        return None
    if pseudo.md5 not in _PAW_RADII:
        text = pseudo.get_content()
        found = re.search(r'<PAW_radius[^>]*rpaw\s*=\s*"([^"]+)"', text)
        radii = [float(r) for r in re.findall(r'<state[^>]*\brc\s*=\s*"([^"]+)"', text)]
        _PAW_RADII[pseudo.md5] = float(found.group(1)) if found else (max(radii) if radii else None)
    return _PAW_RADII[pseudo.md5]


def check_run(
    symbols: list[str],
    cell: np.ndarray,
    positions: np.ndarray,
    moments: np.ndarray,
    params: Mapping,
    pseudos: Mapping[str, PseudoPotentialData],
    mesh=(1, 1, 1),
    offset=(0.0, 0.0, 0.0),
) -> str | None:
    """The first problem with one run (cell rows and positions in A, moments in mu_B), as a message; None if fine."""
    values = np.asarray(moments, dtype=float)
    n = len(symbols)
    if values.ndim != 1:
        return 'the target moments must be one number per site (mu_B)'
    if values.size > n:
        return f'moment {n + 1} is on an unknown site: the structure has {n} sites, {values.size} moments were given'
    if values.size < n:
        return f'{values.size} moments were given for {n} sites: give one target per site (0 for free atoms)'
    if not np.all(np.isfinite(values)):
        return 'the target moments are not all finite'
    limit = float(params.get('max_moment', PARAMETERS['max_moment']))
    big = np.flatnonzero(np.abs(values) > limit)
    if big.size:
        k = int(big[0])
        return f'target moment {values[k]} mu_B on site {k + 1} ({symbols[k]}) exceeds max_moment = {limit} mu_B'
    missing = sorted(set(symbols) - set(pseudos))
    if missing:
        return f'no pseudopotential for {", ".join(missing)} (pseudos given for {", ".join(sorted(pseudos)) or "none"})'
    for element, pseudo in pseudos.items():
        if pseudo.element != element:
            return f'the pseudopotential given for {element} is for {pseudo.element}'
    try:
        settings = cdft_settings(params, symbols, values, mesh, offset)
        check_sphere_overlap(np.asarray(cell), np.asarray(positions), symbols, settings.ratsph)
    except ValueError as exc:
        return str(exc)
    for element in dict.fromkeys(symbols):
        rpaw = paw_radius(pseudos[element])
        if rpaw is not None and settings.ratsph[element] < rpaw - 1e-9:
            return (
                f'ratsph for {element} ({settings.ratsph[element]} bohr) is smaller than the PAW radius of its '
                f'pseudopotential ({rpaw} bohr), which ABINIT refuses: use at least {rpaw}'
            )
    return None


def check_inputs(structure, moments, parameters, pseudos, kpoints=None) -> str | None:
    """:func:`check_run` on the input nodes of a CdftCalculation."""
    try:
        symbols = _elements(structure)
    except ValueError as exc:
        return str(exc)
    if 'moments' not in moments.get_arraynames():
        return 'the moments node needs an array `moments` (one signed target per site, mu_B)'
    mesh, offset = (1, 1, 1), (0.0, 0.0, 0.0)
    if kpoints is not None:
        try:
            mesh, offset = kpoints.get_kpoints_mesh()
        except AttributeError:
            return 'kpoints must be a mesh (KpointsData.set_kpoints_mesh), not a list of k-points'
    positions = np.array([s.position for s in structure.sites])
    return check_run(
        symbols,
        np.array(structure.cell),
        positions,
        moments.get_array('moments'),
        parameters.get_dict(),
        pseudos,
        mesh,
        offset,
    )


def validate_inputs(value, ctx) -> str | None:
    """Whole-namespace check before submission (skipped where a wrapping WorkChain excluded a port)."""
    if any(key not in ctx for key in ('structure', 'moments', 'parameters', 'pseudos', 'kpoints')):
        return None
    if any(key not in value for key in ('structure', 'moments', 'parameters', 'kpoints')):
        return None
    return check_inputs(
        value['structure'], value['moments'], value['parameters'], value.get('pseudos', {}), value['kpoints']
    )


def fidelity_key(
    parameters: Mapping, pseudos: Mapping[str, PseudoPotentialData], kpoints: Mapping, code_version: str | None
) -> dict:
    """What makes two labels comparable: code version, pseudopotential md5s, cutoff, k-points, smearing, U, cDFT.

    ``kpoints``: how the mesh was chosen, e.g. ``{'distance': 0.3}`` (1/A) or ``{'mesh': [2, 2, 2]}``, plus shifts.
    """
    p = {**PARAMETERS, **parameters}
    key = {name: p[name] for name in FIDELITY_PARAMETERS}
    key.update(
        {
            'code': f'ABINIT {code_version}' if code_version else 'ABINIT',
            'kpoints': dict(kpoints),
            'pseudos': {el: node.md5 for el, node in sorted(pseudos.items())},
            'cdft': 'constraint_kind 1, ratsm 0.05',
        }
    )
    return key


class CdftCalculation(CalcJob):
    """A collinear constrained-DFT run of ABINIT 9.6: energy, forces, stress, moments and magnetic forces."""

    _INPUT = 'aiida.abi'
    _OUTPUT = 'aiida.abo'
    _LOG = 'aiida.log'
    #: ABINIT stops its SCF loop (and still writes its output) at this fraction of the walltime
    TIMELIMIT_FRACTION = 0.9

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('structure', valid_type=orm.StructureData, help='The cell, written as given (never reduced).')
        spec.input(
            'moments',
            valid_type=orm.ArrayData,
            help='Array `moments` (N,): signed target moment per site, mu_B (0 for free atoms).',
        )
        spec.input('kpoints', valid_type=orm.KpointsData, help='The k-point mesh (with its offset).')
        spec.input(
            'parameters', valid_type=orm.Dict, help='cDFT settings: see aiida_mmtp.calculations.cdft.PARAMETERS.'
        )
        spec.input_namespace(
            'pseudos',
            valid_type=PseudoPotentialData,
            dynamic=True,
            help='One pseudopotential per element, keyed by element symbol.',
        )
        spec.inputs.validator = validate_inputs
        options = spec.inputs['metadata']['options']
        options['resources'].default = {'num_machines': 1, 'num_mpiprocs_per_machine': 1}
        options['parser_name'].default = 'mmtp.abinit.cdft'
        options['input_filename'].default = cls._INPUT
        options['output_filename'].default = cls._OUTPUT
        options['withmpi'].default = False

        spec.output(
            'output_parameters',
            valid_type=orm.Dict,
            help='Scalars: energy (eV), SCF steps, code version, spin flip, largest moment deviation (mu_B).',
        )
        spec.output(
            'output_arrays',
            valid_type=orm.ArrayData,
            required=False,
            help='Labels (converged, on-target runs only): forces (N,3) eV/A, stress (6,) eV/A^3 (ASE, '
            'Voigt), moments (N,) mu_B, mag_forces (N,) eV/mu_B = -dE/dm, target_moments (N,).',
        )
        spec.default_output_node = 'output_parameters'

        spec.exit_code(
            302,
            'ERROR_OUTPUT_MISSING',
            invalidates_cache=True,
            message='The output file {filename} was not retrieved: ABINIT did not start or was killed.',
        )
        spec.exit_code(
            310, 'ERROR_ABINIT_ERROR', invalidates_cache=True, message='ABINIT stopped with an error: {message}'
        )
        spec.exit_code(
            311,
            'ERROR_OUTPUT_INCOMPLETE',
            invalidates_cache=True,
            message='The output stops before "Calculation completed." with no error message (killed?).',
        )
        spec.exit_code(
            312, 'ERROR_OUTPUT_LABELS_MISSING', invalidates_cache=True, message='The output lacks {missing}.'
        )
        spec.exit_code(
            313,
            'ERROR_TARGETS_MISMATCH',
            invalidates_cache=True,
            message='The target moments in the output are not those of the input: {detail}',
        )
        spec.exit_code(
            400,
            'ERROR_OUT_OF_WALLTIME',
            invalidates_cache=True,
            message='The run reached its time limit before the SCF converged.',
        )
        spec.exit_code(
            410, 'ERROR_SCF_NOT_CONVERGED', invalidates_cache=True, message='The SCF did not converge in {nstep} steps.'
        )
        spec.exit_code(
            420,
            'ERROR_MOMENTS_OFF_TARGET',
            invalidates_cache=True,
            message='Constrained moments are off target: {detail}',
        )

    @staticmethod
    def resolve(inputs) -> tuple[list[str], np.ndarray, CdftSettings, bool]:
        """From the input nodes (of this job or of a finished one): element per site, the targets (N,) in mu_B,
        the settings, and whether the run is (or was) made with the targets flipped."""
        symbols = _elements(inputs.structure)
        moments = np.asarray(inputs.moments.get_array('moments'), dtype=float)
        params = inputs.parameters.get_dict()
        mesh, offset = inputs.kpoints.get_kpoints_mesh()
        settings = cdft_settings(params, symbols, moments, mesh, offset)
        flip = spin_flip_applies({**params, 'constrained': settings.constrained}, symbols, moments)
        return symbols, moments, settings, flip

    def prepare_for_submission(self, folder):
        from ..workchains.common import abandoned_by

        why = abandoned_by(self.node)  # a kill of the campaign that did not reach this job before it started
        if why:
            raise RuntimeError(f'not submitted: {why}')
        structure = self.inputs.structure
        symbols, moments, settings, flip = self.resolve(self.inputs)
        pseudos = dict(self.inputs.pseudos)
        names = {el: node.filename for el, node in pseudos.items()}
        if len(set(names.values())) < len(names):
            raise ValueError(f'two pseudopotentials share a file name: {names}')
        text = write_cdft_input(
            symbols,
            np.array(structure.cell),
            np.array([s.position for s in structure.sites]),
            -moments + 0.0 if flip else moments,
            names,
            {el: _Z[el] for el in names},
            settings,
        )
        if flip:
            text = '# all targets flipped (spin_flip): the parser flips moments and magnetic forces back\n' + text
        with folder.open(self._INPUT, 'w') as handle:
            handle.write(text)

        codeinfo = CodeInfo()
        codeinfo.code_uuid = self.inputs.code.uuid
        codeinfo.cmdline_params = [self._INPUT]
        walltime = self.inputs.metadata.options.get('max_wallclock_seconds')
        if walltime:
            seconds = max(int(walltime * self.TIMELIMIT_FRACTION), 1)
            codeinfo.cmdline_params += ['--timelimit', f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}']
        codeinfo.stdout_name = self._LOG
        codeinfo.join_files = True

        calcinfo = CalcInfo()
        calcinfo.codes_info = [codeinfo]
        calcinfo.local_copy_list = [(node.uuid, node.filename, node.filename) for node in pseudos.values()]
        calcinfo.retrieve_list = [self._OUTPUT, self._LOG]
        return calcinfo
