"""``InitialSetWorkChain`` (entry point ``mmtp.initial_set``): the paper's initial training set, labelled by cDFT.

Generates the configurations (:func:`generate_configurations`: lattice scales x
{FM, layered AFM, random 50/50 states}, random displacements, moment
perturbations; seeded, each configuration's origin recorded) and labels them
with :class:`CdftLabelWorkChain` (failures recorded, never trained on).
"""

from __future__ import annotations

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain

from ..data.training_set import TrainingSetData
from .common import why_failed
from .functions import GENERATION, generate_configurations
from .label import CdftLabelWorkChain

__all__ = ['InitialSetWorkChain']


class InitialSetWorkChain(WorkChain):
    """Generate the initial configurations and label them by constrained DFT."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input_namespace('structures', valid_type=orm.StructureData, dynamic=True, help='Cells, by name.')
        spec.input('parameters', valid_type=orm.Dict, help=f'The recipe: {", ".join(GENERATION)}.')
        spec.expose_inputs(CdftLabelWorkChain, namespace='label', exclude=('configurations',))
        spec.outline(cls.generate, cls.label, cls.results)
        spec.output('configurations', valid_type=TrainingSetData, help='The generated configurations (no labels).')
        spec.output('training_set', valid_type=TrainingSetData, required=False, help='Those that were labelled.')
        spec.output('failures', valid_type=orm.Dict, required=False, help='Failed cDFT runs (index, run, message).')
        spec.exit_code(400, 'ERROR_LABELLING', message='The labelling failed: {message}')

    def generate(self):
        self.ctx.configurations = generate_configurations(self.inputs.parameters, **self.inputs.structures)
        self.out('configurations', self.ctx.configurations)

    def label(self):
        inputs = AttributeDict(self.exposed_inputs(CdftLabelWorkChain, 'label'))
        inputs.configurations = self.ctx.configurations
        self.report(f'labelling {len(self.ctx.configurations)} generated configurations')
        return ToContext(labels=self.submit(CdftLabelWorkChain, **inputs))

    def results(self):
        node = self.ctx.labels
        for name in ('training_set', 'failures'):
            if name in node.outputs:
                self.out(name, node.outputs[name])
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_LABELLING.format(message=why_failed(node))
        return None
