"""CalcJobs that run the engine's ``mmtp`` command on any computer: select, simulate (and the shared base).

Heavy numerics never run in the daemon: maxvol, moment equilibration,
relaxation and MD with on-the-fly grading run here as jobs, with the
potential, active set, training set and configurations as input nodes and
the preselected and selected configurations as output nodes.

- ``mmtp.select`` (:class:`MmtpSelectCalculation`): the active set of a potential
  from its training set, and optionally the maxvol selection among candidates.
- ``mmtp.simulate`` (:class:`MmtpSimulateCalculation`): ``mmtp equilibrate``,
  ``relax`` or ``md`` of a set of configurations, grading every configuration met.
"""

from __future__ import annotations

from aiida import orm
from aiida.common import CalcInfo, CodeInfo
from aiida.engine import CalcJob

from ..data.active_set import ActiveSetData
from ..data.potential import MtpPotentialData
from ..data.training_set import TrainingSetData

__all__ = [
    'SIMULATION_PARAMETERS',
    'SPIN_KINDS',
    'MmtpEngineCalculation',
    'MmtpSelectCalculation',
    'MmtpSimulateCalculation',
    'job_threads',
]

#: Parameters of ``mmtp.simulate`` per kind, with their command-line options (None: the engine's default).
SIMULATION_PARAMETERS = {
    'equilibrate': {'tol': '--tol', 'steps': '--steps'},
    'relax': {'fmax': '--fmax', 'steps': '--steps', 'fixed_cell': '--fixed-cell', 'fixed_moments': '--fixed-moments'},
    'md': {
        'temperature': '--temperature',
        'timestep': '--timestep',
        'steps': '--steps',
        'friction': '--friction',
        'ensemble': '--ensemble',
        'seed': '--seed',
        'spin_moves': '--spin-moves',  # dlm | mdmc: moves of the sign pattern (aiida_mmtp.mtp.spinflip)
        'spin_every': '--spin-every',
        'flip_attempts': '--flip-attempts',
        'up_fraction': '--up-fraction',
    },  # fmt: skip
}
#: MD with moves of the sign pattern, as kinds of their own (campaign stages ``dlm-md``, ``mdmc``): the engine's
#: ``md --spin-moves dlm|mdmc`` with every md parameter but ``spin_moves``.
SPIN_KINDS = {'dlm-md': 'dlm', 'mdmc': 'mdmc'}
for _kind in SPIN_KINDS:
    SIMULATION_PARAMETERS[_kind] = {k: v for k, v in SIMULATION_PARAMETERS['md'].items() if k != 'spin_moves'}
_COMMON = {'gamma_low': '--gamma-low', 'gamma_up': '--gamma-up', 'stop_all': '--stop-all'}
#: Ranges of the numeric simulation parameters: (lowest allowed, whether the lowest itself is allowed).
_RANGES = {
    'gamma_low': (0.0, False),
    'gamma_up': (0.0, False),
    'tol': (0.0, False),
    'steps': (1, True),
    'fmax': (0.0, False),
    'temperature': (0.0, True),
    'timestep': (0.0, False),
    'friction': (0.0, True),
    'spin_every': (1, True),
    'flip_attempts': (1, True),
    'up_fraction': (0.0, True),
}


def did_you_mean(name: str, known) -> str:
    """`` (did you mean X?)`` for the closest of ``known`` to a misspelled ``name``, or ''."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f' (did you mean {close[0]}?)' if close else ''


def simulation_problem(params: dict) -> str | None:
    """What is wrong with the parameters of an ``mmtp.simulate`` job (kind, keys, ranges), or None."""
    kind = params.get('kind')
    if kind not in SIMULATION_PARAMETERS:
        return f'`kind` must be one of {", ".join(SIMULATION_PARAMETERS)}, got {kind!r}'
    known = {'kind', 'grading', *_COMMON, *SIMULATION_PARAMETERS[kind]}
    for key in sorted(set(params) - known):
        return f'unknown parameter {key!r} for {kind}{did_you_mean(key, known)} (known: {", ".join(sorted(known))})'
    for key, (lowest, inclusive) in _RANGES.items():
        value = params.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            return f'{key} must be a number, got {value!r}'
        if value < lowest or (value == lowest and not inclusive):
            return f'{key} must be {">=" if inclusive else ">"} {lowest:g}, got {value}'
    low, up = params.get('gamma_low'), params.get('gamma_up')
    if low is not None and up is not None and low > up:
        return f'gamma_low ({low}) must not exceed gamma_up ({up})'
    if params.get('ensemble', 'nvt') not in ('nvt', 'nve'):
        return f"ensemble must be 'nvt' or 'nve', got {params['ensemble']!r}"
    if params.get('spin_moves', 'dlm') not in ('dlm', 'mdmc'):
        return f"spin_moves must be 'dlm' or 'mdmc', got {params['spin_moves']!r}"
    if params.get('up_fraction', 0.0) > 1:
        return f'up_fraction must lie in [0, 1], got {params["up_fraction"]}'
    return None


def job_threads(resources: dict) -> int:
    """Threads of one engine job: the cores its resources give it on its machine, i.e. ``num_mpiprocs_per_machine``
    (or ``tot_num_mpiprocs``) times ``num_cores_per_mpiproc``; the job runs one process, its numba kernels use them."""
    slots = resources.get('num_mpiprocs_per_machine') or resources.get('tot_num_mpiprocs') or 1
    return max(1, int(slots) * int(resources.get('num_cores_per_mpiproc') or 1))


class MmtpEngineCalculation(CalcJob):
    """Base of the engine jobs: one or more ``mmtp`` commands in a row, each with its log; serial by default."""

    _POTENTIAL_IN = 'input.mtp'

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('potential', valid_type=MtpPotentialData, help='The potential.')
        options = spec.inputs['metadata']['options']
        options['resources'].default = {'num_machines': 1, 'num_mpiprocs_per_machine': 1}
        options['withmpi'].default = False
        spec.exit_code(300, 'ERROR_OUTPUT_MISSING', invalidates_cache=True, message='The job wrote no {filename}.')
        spec.exit_code(310, 'ERROR_COMMAND_FAILED', invalidates_cache=True, message='mmtp failed: {message}')

    def _calcinfo(
        self, folder, commands: list[tuple[list[str], str]], retrieve: list[str], temporary: list[str] = ()
    ) -> CalcInfo:
        """Run each ``(arguments, log file)`` with the code, in order; retrieve ``retrieve`` and the logs, and
        ``temporary`` for the parser only (files that become nodes of their own are not stored twice).

        Every file written so far in ``folder`` is an input node written out (potential, active set, training set,
        configurations): none is copied into the job's node (``provenance_exclude_list``), so a campaign does not
        store its training set again with every fit, nor its active set with every simulation job."""
        codes = []
        for args, log in commands:
            codeinfo = CodeInfo()
            codeinfo.code_uuid = self.inputs.code.uuid
            codeinfo.cmdline_params = args
            codeinfo.stdout_name = log
            codeinfo.join_files = True
            codes.append(codeinfo)
        calcinfo = CalcInfo()
        calcinfo.codes_info = codes
        calcinfo.retrieve_list = list(retrieve) + [log for _, log in commands]
        calcinfo.retrieve_temporary_list = list(temporary)
        calcinfo.provenance_exclude_list = sorted(folder.get_content_list())
        threads = job_threads(self.node.get_option('resources'))
        # after the computer's and the code's prepend text (which may set OMP_NUM_THREADS=1 for ABINIT's sake)
        calcinfo.prepend_text = f'export NUMBA_NUM_THREADS={threads} OMP_NUM_THREADS={threads}'
        return calcinfo

    def _write_potential(self, folder) -> None:
        with folder.open(self._POTENTIAL_IN, 'w') as handle:
            handle.write(self.inputs.potential.get_content())

    def _write_active_set(self, folder, name: str) -> None:
        with folder.open(name, 'wb') as handle, self.inputs.active_set.open(mode='rb') as source:
            handle.write(source.read())


def _same_species(value, names: tuple[str, ...]) -> str | None:
    """Every set in ``names`` (present in ``value``) has the species of the potential, in order."""
    if 'potential' not in value:
        return None
    species = value['potential'].species
    for name in names:
        if name in value and value[name].species != species:
            return f'the potential is for {species}, the {name} for {value[name].species}'
    return None


def validate_select(value, ctx) -> str | None:
    problem = _same_species(value, ('training_set', 'candidates'))
    if problem:
        return problem
    if ('training_set' in value) == ('active_set' in value):
        return 'give either `training_set` (to build the active set) or `active_set`, not both and not neither'
    params = value['parameters'].get_dict() if 'parameters' in value else {}
    known = ('max_selected', 'fill', 'neighborhoods', 'updated_active_set')
    unknown = sorted(set(params) - set(known))
    if unknown:
        return f'unknown parameters: {", ".join(unknown)} (known: {", ".join(known)})'
    if params.get('max_selected') is not None and int(params['max_selected']) < 1:
        return f'max_selected must be at least 1, got {params["max_selected"]}'
    if 'active_set' in value and 'potential' in value:
        n = value['active_set'].base.attributes.get('n_params')
        if n != value['potential'].n_params:
            return f'the active set has {n} rows, the potential {value["potential"].n_params} parameters'
    return None


class MmtpSelectCalculation(MmtpEngineCalculation):
    """The active set of a potential (maxvol over its training set) and, given candidates, the ones to label."""

    _TRAIN = 'train.cfg'
    _ALS_IN = 'input.als'
    _ALS_OUT = 'output.als'
    _CANDIDATES = 'candidates.cfg'
    _SELECTED = 'selected.cfg'
    _REPORT = 'select.json'
    _LOG = 'select.log'

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('training_set', valid_type=TrainingSetData, required=False, help='Builds the active set.')
        spec.input('active_set', valid_type=ActiveSetData, required=False, help='An active set of this potential.')
        spec.input('candidates', valid_type=TrainingSetData, required=False, help='Preselected configurations.')
        spec.input(
            'parameters',
            valid_type=orm.Dict,
            required=False,
            help='max_selected, fill (unit-row diagonal), neighborhoods (per-atom rows, with training_set), '
            'updated_active_set (with active_set and candidates: output the active set updated by the selected rows; '
            'default False, a refit rebuilds it)',
        )
        spec.inputs.validator = validate_select
        spec.inputs['metadata']['options']['parser_name'].default = 'mmtp.select'
        spec.output(
            'active_set',
            valid_type=ActiveSetData,
            required=False,
            help='The active set built from `training_set` (with candidates: updated by the selected rows).',
        )
        spec.output('selected', valid_type=TrainingSetData, required=False, help='Candidates to label (if any).')
        spec.output('report', valid_type=orm.Dict, help='n_candidates, n_selected, selected (candidate indices).')
        spec.default_output_node = 'report'

    def prepare_for_submission(self, folder):
        self._write_potential(folder)
        params = self.inputs.parameters.get_dict() if 'parameters' in self.inputs else {}
        args = ['select', self._POTENTIAL_IN, '--output', self._ALS_OUT, '--report', self._REPORT]
        args += ['--species', *self.inputs.potential.species]
        if 'training_set' in self.inputs:
            self.inputs.training_set.export_cfg(folder.get_abs_path(self._TRAIN))
            args += ['--train', self._TRAIN]
        else:
            self._write_active_set(folder, self._ALS_IN)
            args += ['--als', self._ALS_IN]
        if params.get('fill') is not None:
            args += ['--fill', str(float(params['fill']))]
        if params.get('neighborhoods') and 'training_set' in self.inputs:
            args.append('--neighborhoods')
        if 'candidates' in self.inputs:
            self.inputs.candidates.export_cfg(folder.get_abs_path(self._CANDIDATES))
            args += ['--candidates', self._CANDIDATES, '--selected', self._SELECTED]
            if params.get('max_selected') is not None:
                args += ['--max', str(int(params['max_selected']))]
        return self._calcinfo(folder, [(args, self._LOG)], [self._REPORT], temporary=[self._ALS_OUT, self._SELECTED])


def validate_simulate(value, ctx) -> str | None:
    problem = _same_species(value, ('configurations',))
    if problem or 'parameters' not in value:
        return problem
    params = value['parameters'].get_dict()
    problem = simulation_problem(params)
    if problem:
        return f'parameters: {problem}'
    if params.get('grading', True) and 'active_set' not in value:
        return 'grading needs an `active_set` (or set parameters.grading to False)'
    if 'configurations' in value:
        for k, cfg in enumerate(value['configurations'].get_configurations()):
            if cfg.moments is None:
                return f'configuration {k + 1} has no magnetic moments'
    return None


class MmtpSimulateCalculation(MmtpEngineCalculation):
    """Moment equilibration, relaxation or MD of each configuration, grading every configuration met."""

    _START = 'start.cfg'
    _ALS_IN = 'input.als'
    _FINAL = 'final.cfg'
    _PRESELECTED = 'preselected.cfg'
    _REPORT = 'report.json'
    _TRAJECTORY = 'trajectory.xyz'
    _LOG = 'simulate.log'

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('configurations', valid_type=TrainingSetData, help='Starting configurations, with moments.')
        spec.input('active_set', valid_type=ActiveSetData, required=False, help='For grading (of this potential).')
        spec.input(
            'parameters',
            valid_type=orm.Dict,
            help='kind (equilibrate, relax, md), gamma_low, gamma_up, stop_all, grading, and per kind: '
            'equilibrate tol (eV/mu_B), steps; relax fmax (eV/A), steps, fixed_cell, fixed_moments (skip the first '
            'stage, moment equilibration); '
            'md temperature (K), timestep (fs), steps, friction (1/fs), ensemble, seed, spin_moves (dlm or mdmc), '
            'spin_every (steps), flip_attempts, up_fraction; dlm-md and mdmc: md with spin_moves dlm or mdmc.',
        )
        spec.inputs.validator = validate_simulate
        spec.inputs['metadata']['options']['parser_name'].default = 'mmtp.simulate'
        spec.output('final', valid_type=TrainingSetData, help='The last configuration of each run (no labels).')
        spec.output('preselected', valid_type=TrainingSetData, required=False,
                    help='Configurations with gamma >= gamma_low (array `grades`); absent when none.')  # fmt: skip
        spec.output('trajectory', valid_type=orm.SinglefileData, required=False, help='extxyz of every frame.')
        spec.output('report', valid_type=orm.Dict, help='Per run: why it stopped, steps, max grade; preselected count.')
        spec.default_output_node = 'report'

    def prepare_for_submission(self, folder):
        self._write_potential(folder)
        params = self.inputs.parameters.get_dict()
        kind = params['kind']
        self.inputs.configurations.export_cfg(folder.get_abs_path(self._START))
        command = 'md' if kind in SPIN_KINDS else kind
        args = [command, self._POTENTIAL_IN, self._START, '--output', self._FINAL, '--preselected', self._PRESELECTED,
                '--report', self._REPORT, '--trajectory', self._TRAJECTORY,
                '--species', *self.inputs.potential.species]  # fmt: skip
        if kind in SPIN_KINDS:
            args += ['--spin-moves', SPIN_KINDS[kind]]
        if params.get('grading', True):
            self._write_active_set(folder, self._ALS_IN)
            args += ['--als', self._ALS_IN]
        else:
            args.append('--no-grading')
        for key, flag in {**_COMMON, **SIMULATION_PARAMETERS[kind]}.items():
            value = params.get(key)
            if isinstance(value, bool):
                args += [flag] if value else []
            elif value is not None:
                args += [flag, str(value)]
        temporary = [self._FINAL, self._PRESELECTED, self._TRAJECTORY]
        return self._calcinfo(folder, [(args, self._LOG)], [self._REPORT], temporary=temporary)
