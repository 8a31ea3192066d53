"""``InitialSetWorkChain`` (entry point ``mmtp.initial_set``): the paper's initial training set, labelled by cDFT.

Generates the configurations (:func:`generate_configurations`: lattice scales x
{FM, layered AFM, random 50/50 states}, random displacements, moment
perturbations; seeded, each configuration's origin recorded) and labels them
with :class:`CdftLabelWorkChain` or another labeller (:mod:`.labellers`; failures recorded, never trained on). With
``equilibrium_moments`` (the paper's recipe), the unperturbed cells are first labelled by spin-polarised DFT with free
moments (another labeller: its ``free_moments`` input), and the perturbed copies take those equilibrium moments.
"""

from __future__ import annotations

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain, calcfunction, if_

from ..calculations.functions import merge_training_sets
from ..data.training_set import TrainingSetData
from .common import why_failed
from .functions import GENERATION, free_moment_parameters, generate_configurations, perturb_labelled
from .labellers import define_labelling, labeller_of, labelling_problem, load_labeller, uses_cdft

__all__ = ['InitialSetWorkChain', 'free_moments_problem', 'validate_inputs']


class InitialSetWorkChain(WorkChain):
    """Generate the initial configurations and label them by constrained DFT.

    With ``equilibrium_moments`` in the recipe (the paper), the unperturbed cells are first labelled by
    spin-polarised DFT with free moments; their perturbed copies then take those equilibrium moments, perturbed, and
    are labelled by cDFT. The training set holds both; the failures of both labellings are recorded.
    """

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input_namespace('structures', valid_type=orm.StructureData, dynamic=True, help='Cells, by name.')
        spec.input('parameters', valid_type=orm.Dict, help=f'The recipe: {", ".join(GENERATION)}.')
        define_labelling(spec)
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.generate,
            if_(cls.equilibrium_moments)(cls.label_free, cls.perturb),
            cls.label,
            cls.results,
        )  # fmt: skip
        spec.output('configurations', valid_type=TrainingSetData, help='The generated configurations (no labels).')
        spec.output('training_set', valid_type=TrainingSetData, required=False, help='Those that were labelled.')
        spec.output('failures', valid_type=orm.Dict, required=False, help='Failed cDFT runs (index, run, message).')
        spec.output('equilibrium_labels', valid_type=TrainingSetData, required=False,
                    help='With equilibrium_moments: the unperturbed cells labelled with free moments.')  # fmt: skip
        spec.exit_code(400, 'ERROR_LABELLING', message='The labelling failed: {message}')
        spec.exit_code(410, 'ERROR_EQUILIBRIUM_MOMENTS', message='The free-moment DFT runs failed: {message}')

    def equilibrium_moments(self) -> bool:
        return bool(self.inputs.parameters.get('equilibrium_moments', False))

    def generate(self):
        params = self.inputs.parameters
        if self.equilibrium_moments():
            params = unperturbed_recipe(params)
        self.ctx.configurations = generate_configurations(params, **self.inputs.structures)
        self.ctx.generated = [self.ctx.configurations]

    def label_free(self):
        labeller, inputs = labeller_of(self)
        if uses_cdft(self.inputs):
            inputs.cdft = AttributeDict(inputs.cdft)
            inputs.cdft.abinit = AttributeDict(inputs.cdft.abinit)
            inputs.cdft.abinit.parameters = free_moment_parameters(inputs.cdft.abinit.parameters)
        else:  # validated: the labeller has the optional port
            inputs.free_moments = orm.Bool(True)
        inputs.configurations = self.ctx.configurations
        inputs.metadata = {'call_link_label': 'equilibrium_moments'}
        self.report(f'labelling {len(self.ctx.configurations)} unperturbed configurations with free moments')
        return ToContext(free=self.submit(labeller, **inputs))

    def perturb(self):
        node = self.ctx.free
        if 'training_set' not in node.outputs or not node.is_finished_ok:  # none, or more failures than tolerated
            return self.exit_codes.ERROR_EQUILIBRIUM_MOMENTS.format(message=why_failed(node))
        labels = node.outputs.training_set
        self.out('equilibrium_labels', labels)
        cr = [abs(m) for cfg in labels.get_configurations() for m, t in zip(cfg.moments, cfg.types) if t == 0]
        self.report(f'equilibrium moments of {len(labels)} cells: |m| of the first species {min(cr):.3f}-'
                    f'{max(cr):.3f} mu_B; perturbing them')  # fmt: skip
        self.ctx.configurations = perturb_labelled(labels, self.inputs.parameters)
        self.ctx.generated.append(self.ctx.configurations)
        return None

    def label(self):
        labeller, inputs = labeller_of(self)
        inputs.configurations = self.ctx.configurations
        self.report(f'labelling {len(self.ctx.configurations)} generated configurations')
        return ToContext(labels=self.submit(labeller, **inputs))

    def results(self):
        self.out('configurations', _one_set(self.ctx.generated))
        node = self.ctx.labels
        nodes = [self.ctx.free, node] if 'free' in self.ctx else [node]
        sets = [n.outputs.training_set for n in nodes if 'training_set' in n.outputs]
        if sets:
            self.out('training_set', _one_set(sets))
        failures = [n.outputs.failures for n in nodes if 'failures' in n.outputs]
        if len(failures) == 1:
            self.out('failures', failures[0])
        elif failures:  # index: in the free-moment batch, then in the perturbed one
            names = ('equilibrium_moments', 'perturbed')
            failed = [{**item, 'batch': name} for name, f in zip(names, failures) for item in f['failed']]
            self.out('failures', orm.Dict({'failed': failed, 'n_failed': len(failed),
                                           'n_total': sum(f['n_total'] for f in failures)}).store())  # fmt: skip
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_LABELLING.format(message=why_failed(node))
        return None


def free_moments_problem(value) -> str | None:
    """Why the labeller of ``value`` cannot label at free moments (a recipe with ``equilibrium_moments``), or None."""
    if uses_cdft(value) or not value['parameters'].get_dict().get('equilibrium_moments'):
        return None
    entry_point = value['labeller']['workchain'].value
    if 'free_moments' not in load_labeller(entry_point).spec().inputs:
        return f'equilibrium_moments: the labeller {entry_point} has no input free_moments (labels at free moments)'
    return None


def validate_inputs(value, ctx) -> str | None:
    """One labeller, which can label at free moments where the recipe asks for equilibrium moments."""
    if 'parameters' not in value:
        return None
    return labelling_problem(value) or free_moments_problem(value)


def _one_set(sets: list[TrainingSetData]) -> TrainingSetData:
    """The only set, or the sets merged in order (a calcfunction, for provenance)."""
    return sets[0] if len(sets) == 1 else merge_training_sets(**{f'set_{k}': s for k, s in enumerate(sets)})


@calcfunction
def unperturbed_recipe(parameters: orm.Dict) -> orm.Dict:
    """The recipe without its moment-perturbed copies (``n_perturbed`` 0)."""
    return orm.Dict({**parameters.get_dict(), 'n_perturbed': 0})
