"""``CdftBaseWorkChain`` (entry point ``mmtp.abinit.cdft``): one cDFT run, restarted until it gives labels.

Handlers (each says what it changed in the report):

- SCF not converged (410): first more steps (``nstep`` x2), then gentler
  mixing (``diemix`` 0.3, then halved), then give up.
- Moments off target (420): a tighter SCF criterion (``tolvrs`` /100, more
  steps); once at the floor, a stronger constraint (``magcon_lambda`` x10).
- Out of walltime (400): twice the walltime, up to ``walltime_max``.
- ABINIT input errors and mismatched targets (310, 313) are not retried.
"""

from __future__ import annotations

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import BaseRestartWorkChain, ProcessHandlerReport, process_handler, while_

from ..calculations.cdft import PARAMETERS, CdftCalculation, check_inputs
from ..calculations.functions import create_kpoints_from_distance
from .common import abandoned_by

__all__ = ['CdftBaseWorkChain']


def validate_inputs(value, ctx) -> str | None:
    """Exactly one way of giving k-points; all other checks of the CalcJob before anything runs."""
    if 'kpoints' in ctx and 'kpoints_distance' in ctx:
        if ('kpoints' in value) == ('kpoints_distance' in value):
            return 'give either `kpoints` (a mesh) or `kpoints_distance` (1/A), not both and not neither'
        if 'kpoints_distance' in value and value['kpoints_distance'].value <= 0:
            return f'kpoints_distance must be positive, got {value["kpoints_distance"].value}'
    calc = value.get('abinit', {})
    if all(key in calc for key in ('structure', 'moments', 'parameters')):
        return check_inputs(
            calc['structure'], calc['moments'], calc['parameters'], calc.get('pseudos', {}), value.get('kpoints')
        )
    return None


class CdftBaseWorkChain(BaseRestartWorkChain):
    """Run a :class:`CdftCalculation`, fixing what can be fixed, until it yields converged, on-target labels."""

    _process_class = CdftCalculation

    #: Tuning of the handlers, in one place.
    defaults = AttributeDict(
        {
            'nstep_factor': 2,
            'nstep_max': 1000,
            'diemix_first': 0.3,
            'mixing_attempts': 2,
            'tolvrs_factor': 1e-2,
            'tolvrs_min': 1e-14,
            'magcon_lambda_factor': 10.0,
            'magcon_lambda_start': 0.01,  # ABINIT's default
            'magcon_lambda_max': 10.0,
            'walltime_factor': 2.0,
            'walltime_max': 7 * 24 * 3600,
        }
    )

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.expose_inputs(CdftCalculation, namespace='abinit', exclude=('kpoints',))
        spec.input('kpoints', valid_type=orm.KpointsData, required=False, help='The k-point mesh.')
        spec.input(
            'kpoints_distance',
            valid_type=orm.Float,
            required=False,
            help='Largest spacing between k-points, 1/A (2*pi included): the mesh follows the cell.',
        )
        spec.input('kpoints_force_parity', valid_type=orm.Bool, default=lambda: orm.Bool(False))
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            cls.make_kpoints,
            while_(cls.should_run_process)(cls.prepare_process, cls.run_process, cls.inspect_process),
            cls.results,
        )
        spec.expose_outputs(CdftCalculation)
        spec.output('kpoints', valid_type=orm.KpointsData, required=False, help='The mesh used (from the distance).')
        spec.exit_code(
            300, 'ERROR_UNRECOVERABLE_FAILURE', message='The calculation failed in a way no restart fixes: {message}'
        )
        spec.exit_code(
            410, 'ERROR_SCF_UNRECOVERABLE', message='The SCF did not converge with more steps nor with gentler mixing.'
        )
        spec.exit_code(
            420,
            'ERROR_MOMENTS_UNRECOVERABLE',
            message='The constrained moments stayed off target with the tightest SCF and constraint.',
        )
        spec.exit_code(430, 'ERROR_WALLTIME_UNRECOVERABLE', message='The run needs more than walltime_max.')
        spec.exit_code(440, 'ERROR_ABANDONED', message='Not run: {message}.')

    def setup(self):
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(CdftCalculation, 'abinit'))
        self.ctx.parameters = self.ctx.inputs.parameters.get_dict()
        self.ctx.scf_restarts = 0

    def make_kpoints(self):
        """The mesh: given, or from ``kpoints_distance`` for this cell (a calcfunction, for provenance)."""
        if 'kpoints' in self.inputs:
            self.ctx.inputs.kpoints = self.inputs.kpoints
        else:
            self.ctx.inputs.kpoints = create_kpoints_from_distance(
                self.inputs.abinit.structure, self.inputs.kpoints_distance, self.inputs.kpoints_force_parity
            )
            self.out('kpoints', self.ctx.inputs.kpoints)

    def prepare_process(self):
        """The parameters as the handlers left them."""
        self.ctx.inputs.parameters = orm.Dict(self.ctx.parameters)

    def run_process(self):
        """Submit the CalcJob, unless a process above this one was killed meanwhile (then nothing is run)."""
        why = abandoned_by(self.node)
        if why:
            self.report(f'not submitting: {why}')
            return self.exit_codes.ERROR_ABANDONED.format(message=why)
        return super().run_process()

    def _get(self, key):
        return self.ctx.parameters.get(key, PARAMETERS[key])

    @process_handler(
        priority=600,
        exit_codes=[CdftCalculation.exit_codes.ERROR_ABINIT_ERROR, CdftCalculation.exit_codes.ERROR_TARGETS_MISMATCH],
    )
    def handle_unrecoverable(self, node):
        """ABINIT refused the input, or ran other targets than ours: a restart would do the same."""
        self.report(f'{node.process_label}<{node.pk}> failed: {node.exit_message}; not restarting')
        return ProcessHandlerReport(True, self.exit_codes.ERROR_UNRECOVERABLE_FAILURE.format(message=node.exit_message))

    @process_handler(priority=500, exit_codes=CdftCalculation.exit_codes.ERROR_OUT_OF_WALLTIME)
    def handle_out_of_walltime(self, node):
        """Twice the walltime (ABINIT restarts from scratch: no wavefunctions are kept)."""
        options = self.ctx.inputs.setdefault('metadata', {}).setdefault('options', {})
        old = options.get('max_wallclock_seconds') or 3600
        if old >= self.defaults.walltime_max:
            self.report(f'{node.process_label}<{node.pk}> ran out of walltime at the cap of {old} s')
            return ProcessHandlerReport(True, self.exit_codes.ERROR_WALLTIME_UNRECOVERABLE)
        options['max_wallclock_seconds'] = new = int(
            min(old * self.defaults.walltime_factor, self.defaults.walltime_max)
        )
        self.report(f'{node.process_label}<{node.pk}> ran out of walltime: restarting with {new} s instead of {old} s')
        return ProcessHandlerReport(True)

    @process_handler(priority=410, exit_codes=CdftCalculation.exit_codes.ERROR_SCF_NOT_CONVERGED)
    def handle_scf_not_converged(self, node):
        """More SCF steps first; then gentler density mixing (``diemix``), twice; then give up."""
        self.ctx.scf_restarts += 1
        nstep = self._get('nstep')
        if self.ctx.scf_restarts == 1 and nstep < self.defaults.nstep_max:
            self.ctx.parameters['nstep'] = new = min(nstep * self.defaults.nstep_factor, self.defaults.nstep_max)
            self.report(f'{node.process_label}<{node.pk}>: SCF not converged in {nstep} steps; restarting with {new}')
            return ProcessHandlerReport(True)
        if self.ctx.scf_restarts <= 1 + self.defaults.mixing_attempts:
            old = self._get('diemix')
            self.ctx.parameters['diemix'] = new = self.defaults.diemix_first if old is None else old / 2
            self.report(
                f'{node.process_label}<{node.pk}>: SCF not converged in {nstep} steps; restarting with '
                f'diemix {new} (was {old or "the default"})'
            )
            return ProcessHandlerReport(True)
        self.report(f'{node.process_label}<{node.pk}>: SCF not converged after {self.ctx.scf_restarts - 1} restarts')
        return ProcessHandlerReport(True, self.exit_codes.ERROR_SCF_UNRECOVERABLE)

    @process_handler(priority=420, exit_codes=CdftCalculation.exit_codes.ERROR_MOMENTS_OFF_TARGET)
    def handle_moments_off_target(self, node):
        """Tighten the SCF (``tolvrs``), then strengthen the constraint (``magcon_lambda``)."""
        tolvrs = self._get('tolvrs')
        if tolvrs > self.defaults.tolvrs_min:
            self.ctx.parameters['tolvrs'] = new = max(tolvrs * self.defaults.tolvrs_factor, self.defaults.tolvrs_min)
            self.ctx.parameters['nstep'] = max(self._get('nstep'), PARAMETERS['nstep'])
            self.report(f'{node.process_label}<{node.pk}>: {node.exit_message} Restarting with tolvrs {new:.1e}')
            return ProcessHandlerReport(True)
        lam = self._get('magcon_lambda') or self.defaults.magcon_lambda_start
        if lam < self.defaults.magcon_lambda_max:
            self.ctx.parameters['magcon_lambda'] = new = lam * self.defaults.magcon_lambda_factor
            self.report(f'{node.process_label}<{node.pk}>: {node.exit_message} Restarting with magcon_lambda {new}')
            return ProcessHandlerReport(True)
        self.report(f'{node.process_label}<{node.pk}>: moments off target at the tightest settings')
        return ProcessHandlerReport(True, self.exit_codes.ERROR_MOMENTS_UNRECOVERABLE)
