"""``MmtpTrainCalculation`` (entry point ``mmtp.train``): fit a potential with ``mmtp train`` on any computer.

The fit is heavy numerics, so it runs as a CalcJob, never in the daemon. The
code is the engine's ``mmtp`` executable on the target computer. With the
setting ``active_set`` the same job then builds the active set of the fitted
potential from the training set (``mmtp select --train``), as the next
exploration needs it.
"""

from __future__ import annotations

from aiida import orm

from ..data.active_set import ActiveSetData
from ..data.potential import MtpPotentialData
from ..data.training_set import TrainingSetData
from .engine import MmtpEngineCalculation

__all__ = ['SETTINGS', 'MmtpTrainCalculation']

#: Keys of the ``settings`` input: loss weights (energy, forces, stress, magnetic forces; the paper's
#: 1, 0.01, 0.001, 0.1), iteration cap, relative tolerance, whether to restart from least squares,
#: whether to build the active set of the fitted potential too, and whether its rows are per atom
#: (``neighborhoods``: MLIP-3's neighbourhood selection; the active-set file keeps the mode for every later job).
SETTINGS = {
    'weights': None,
    'max_iter': None,
    'tol': None,
    'reinit_linear': False,
    'active_set': False,
    'neighborhoods': False,
    'earlier': None,
}


def validate_inputs(value, ctx) -> str | None:
    """Same species in the same order, energies on every configuration, known settings."""
    if 'potential' not in value or 'training_set' not in value:
        return None
    potential, training_set = value['potential'], value['training_set']
    if potential.species != training_set.species:
        return f'the potential is for {potential.species}, the training set for {training_set.species}'
    if 'test_set' in value and value['test_set'].species != training_set.species:
        return f'the test set is for {value["test_set"].species}, the training set for {training_set.species}'
    counts = training_set.base.attributes.get('label_counts')
    if counts['energy'] < len(training_set):
        return f'{len(training_set) - counts["energy"]} of {len(training_set)} configurations have no energy label'
    settings = value['settings'].get_dict() if 'settings' in value else {}
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        return f'unknown settings: {", ".join(unknown)} (known: {", ".join(SETTINGS)})'
    earlier = settings.get('earlier')
    if earlier is not None and not 0 < int(earlier) < len(training_set):
        return f'earlier: the number of configurations fitted before, 1 to {len(training_set) - 1}, got {earlier}'
    if settings.get('weights') is not None and len(settings['weights']) != 4:
        return 'weights: give four numbers (energy, forces, stress, magnetic forces)'
    return None


class MmtpTrainCalculation(MmtpEngineCalculation):
    """Fit ``potential`` to ``training_set`` (energies, forces, stresses, magnetic forces)."""

    _TRAIN = 'train.cfg'
    _TEST = 'test.cfg'
    _POTENTIAL_OUT = 'output.mtp'
    _REPORT = 'report.json'
    _LOG = 'train.log'
    _ALS_OUT = 'output.als'
    _SELECT_LOG = 'select.log'

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.inputs['potential'].help = 'Start: untrained (least squares) or trained.'
        spec.input('training_set', valid_type=TrainingSetData, help='Labelled configurations.')
        spec.input('settings', valid_type=orm.Dict, required=False,
                   help='weights, max_iter, tol, reinit_linear, active_set, earlier (the first N configurations were '
                   'fitted before: their errors and those of the rest are reported apart)')  # fmt: skip
        spec.input(
            'test_set',
            valid_type=TrainingSetData,
            required=False,
            help="Held-out labelled configurations (never fitted): their errors are the report's test_errors.",
        )
        spec.inputs.validator = validate_inputs
        spec.inputs['metadata']['options']['parser_name'].default = 'mmtp.train'
        spec.output('potential', valid_type=MtpPotentialData, help='The fitted potential.')
        spec.output('report', valid_type=orm.Dict, help='Iterations, loss, RMSE/MAE of E, F, S, T.')
        spec.output('active_set', valid_type=ActiveSetData, required=False,
                    help='The active set of the fitted potential (setting active_set).')  # fmt: skip
        spec.default_output_node = 'report'

    def prepare_for_submission(self, folder):
        self._write_potential(folder)
        self.inputs.training_set.export_cfg(folder.get_abs_path(self._TRAIN))
        settings = {**SETTINGS, **(self.inputs.settings.get_dict() if 'settings' in self.inputs else {})}
        species = self.inputs.training_set.species
        args = ['train', self._POTENTIAL_IN, self._TRAIN, self._POTENTIAL_OUT, '--report', self._REPORT]
        args += ['--species', *species]
        if 'test_set' in self.inputs:
            self.inputs.test_set.export_cfg(folder.get_abs_path(self._TEST))
            args += ['--test', self._TEST]
        if settings['weights'] is not None:
            args += ['--weights', *[str(float(w)) for w in settings['weights']]]
        if settings['max_iter'] is not None:
            args += ['--max-iter', str(int(settings['max_iter']))]
        if settings['tol'] is not None:
            args += ['--tol', str(float(settings['tol']))]
        if settings['reinit_linear']:
            args.append('--reinit-linear')
        if settings['earlier']:
            args += ['--earlier', str(int(settings['earlier']))]
        commands = [(args, self._LOG)]
        if settings['active_set']:
            select = ['select', self._POTENTIAL_OUT, '--train', self._TRAIN, '--output', self._ALS_OUT]
            select += ['--neighborhoods'] if settings['neighborhoods'] else []
            commands.append((select + ['--species', *species], self._SELECT_LOG))
        return self._calcinfo(folder, commands, [self._REPORT], temporary=[self._POTENTIAL_OUT, self._ALS_OUT])
