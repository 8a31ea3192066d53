"""``MmtpLabelRefCalculation`` (entry point ``mmtp.label_ref``): label configurations by the analytic reference model.

The engine's ``mmtp label-ref`` runs the magnetic pair model of :mod:`aiida_mmtp.mtp.reference` (species Cr-like
and N-like) on the configurations: exact energies (eV), forces (eV/A), virials (eV) and magnetic forces (eV/mu_B)
in milliseconds. It stands in for cDFT where a campaign is rehearsed or tested (the labeller
:class:`~aiida_mmtp.workchains.labellers.ReferenceLabelWorkChain`).
"""

from __future__ import annotations

from aiida import orm

from ..data.training_set import TrainingSetData
from .engine import MmtpEngineCalculation

__all__ = ['REFERENCE_FIDELITY', 'MmtpLabelRefCalculation']

#: The fidelity key of every label of the analytic model (one model, one fidelity).
REFERENCE_FIDELITY = {'code': 'analytic magnetic pair model (aiida_mmtp.mtp.reference.MagneticPairPotential)'}


def validate_inputs(value, ctx) -> str | None:
    """The model knows two species (Cr-like, N-like); every configuration needs moments."""
    if 'configurations' not in value:
        return None
    configurations = value['configurations']
    if len(configurations.species) > 2:
        return f'the reference model knows two species, got {", ".join(configurations.species)}'
    for k, cfg in enumerate(configurations.get_configurations()):
        if cfg.moments is None:
            return f'configuration {k + 1} has no magnetic moments'
    return None


class MmtpLabelRefCalculation(MmtpEngineCalculation):
    """Label ``configurations`` with the analytic reference model, at their moments or at its equilibrium ones."""

    _INPUT = 'unlabelled.cfg'
    _OUTPUT = 'labelled.cfg'
    _LOG = 'label_ref.log'

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.inputs['potential'].required = False  # the model is the engine's own
        spec.input('configurations', valid_type=TrainingSetData, help='Configurations with moments (mu_B).')
        spec.input(
            'free_moments',
            valid_type=orm.Bool,
            default=lambda: orm.Bool(False),
            help="Label at the model's equilibrium moments (signs kept), as free spin-polarised DFT does.",
        )
        spec.inputs.validator = validate_inputs
        spec.inputs['metadata']['options']['parser_name'].default = 'mmtp.label_ref'
        spec.output('training_set', valid_type=TrainingSetData, help='The labelled configurations.')

    def prepare_for_submission(self, folder):
        self.inputs.configurations.export_cfg(folder.get_abs_path(self._INPUT))
        args = ['label-ref', self._INPUT, self._OUTPUT] + (['--free-moments'] if self.inputs.free_moments else [])
        return self._calcinfo(folder, [(args, self._LOG)], [], temporary=[self._OUTPUT])
