"""``MmtpTrainCalculation`` (entry point ``mmtp.train``): fit a potential with ``mmtp train`` on any computer.

The fit is heavy numerics, so it runs as a CalcJob, never in the daemon. The
code is the engine's ``mmtp`` executable on the target computer.
"""

from __future__ import annotations

from aiida import orm
from aiida.common import CalcInfo, CodeInfo
from aiida.engine import CalcJob

from ..data.potential import MtpPotentialData
from ..data.training_set import TrainingSetData

__all__ = ['SETTINGS', 'MmtpTrainCalculation']

#: Keys of the ``settings`` input: loss weights (energy, forces, stress, magnetic forces; the paper's
#: 1, 0.01, 0.001, 0.1), iteration cap, relative tolerance, and whether to restart from least squares.
SETTINGS = {'weights': None, 'max_iter': None, 'tol': None, 'reinit_linear': False}


def validate_inputs(value, ctx) -> str | None:
    """Same species in the same order, energies on every configuration, known settings."""
    if 'potential' not in value or 'training_set' not in value:
        return None
    potential, training_set = value['potential'], value['training_set']
    if potential.species != training_set.species:
        return f'the potential is for {potential.species}, the training set for {training_set.species}'
    counts = training_set.base.attributes.get('label_counts')
    if counts['energy'] < len(training_set):
        return f'{len(training_set) - counts["energy"]} of {len(training_set)} configurations have no energy label'
    settings = value['settings'].get_dict() if 'settings' in value else {}
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        return f'unknown settings: {", ".join(unknown)} (known: {", ".join(SETTINGS)})'
    if settings.get('weights') is not None and len(settings['weights']) != 4:
        return 'weights: give four numbers (energy, forces, stress, magnetic forces)'
    return None


class MmtpTrainCalculation(CalcJob):
    """Fit ``potential`` to ``training_set`` (energies, forces, stresses, magnetic forces)."""

    _POTENTIAL_IN = 'input.mtp'
    _TRAIN = 'train.cfg'
    _POTENTIAL_OUT = 'output.mtp'
    _REPORT = 'report.json'
    _LOG = 'train.log'

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('potential', valid_type=MtpPotentialData, help='Start: untrained (least squares) or trained.')
        spec.input('training_set', valid_type=TrainingSetData, help='Labelled configurations.')
        spec.input('settings', valid_type=orm.Dict, required=False, help='weights, max_iter, tol, reinit_linear')
        spec.inputs.validator = validate_inputs
        options = spec.inputs['metadata']['options']
        options['resources'].default = {'num_machines': 1, 'num_mpiprocs_per_machine': 1}
        options['parser_name'].default = 'mmtp.train'
        options['withmpi'].default = False
        spec.output('potential', valid_type=MtpPotentialData, help='The fitted potential.')
        spec.output('report', valid_type=orm.Dict, help='Iterations, loss, RMSE/MAE of E, F, S, T.')
        spec.default_output_node = 'report'
        spec.exit_code(300, 'ERROR_OUTPUT_MISSING', invalidates_cache=True,
                       message='The fit wrote no {filename}.')  # fmt: skip
        spec.exit_code(310, 'ERROR_TRAIN_FAILED', invalidates_cache=True, message='mmtp train failed: {message}')

    def prepare_for_submission(self, folder):
        with folder.open(self._POTENTIAL_IN, 'w') as handle:
            handle.write(self.inputs.potential.get_content())
        self.inputs.training_set.export_cfg(folder.get_abs_path(self._TRAIN))
        settings = {**SETTINGS, **(self.inputs.settings.get_dict() if 'settings' in self.inputs else {})}
        args = ['train', self._POTENTIAL_IN, self._TRAIN, self._POTENTIAL_OUT, '--report', self._REPORT]
        args += ['--species', *self.inputs.training_set.species]
        if settings['weights'] is not None:
            args += ['--weights', *[str(float(w)) for w in settings['weights']]]
        if settings['max_iter'] is not None:
            args += ['--max-iter', str(int(settings['max_iter']))]
        if settings['tol'] is not None:
            args += ['--tol', str(float(settings['tol']))]
        if settings['reinit_linear']:
            args.append('--reinit-linear')
        codeinfo = CodeInfo()
        codeinfo.code_uuid = self.inputs.code.uuid
        codeinfo.cmdline_params = args
        codeinfo.stdout_name = self._LOG
        codeinfo.join_files = True
        calcinfo = CalcInfo()
        calcinfo.codes_info = [codeinfo]
        calcinfo.retrieve_list = [self._POTENTIAL_OUT, self._REPORT, self._LOG]
        return calcinfo
