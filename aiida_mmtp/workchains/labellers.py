"""Labellers: the work chains that label a campaign's configurations, and how a campaign plugs one in.

A work chain that labels configurations (cDFT, another DFT code, a reference model) plugs into
:class:`~.campaign.CampaignWorkChain`, :class:`~.initial.InitialSetWorkChain` and
:class:`~.iteration.ActiveLearningIterationWorkChain` when it has this interface:

Inputs
    ``configurations`` (:class:`TrainingSetData`): cells (A), positions (A), species and signed target moments
    (mu_B); any labels in it are ignored. Every other input is the labeller's own (its settings).
    Optional ports the campaign uses where they exist: ``free_moments`` (``Bool``: label at the self-consistent
    moments instead of the targets; the initial set's ``equilibrium_moments`` needs it) and ``reuse`` (``List`` of
    UUIDs of earlier runs whose labels at this fidelity are taken instead of being computed again; a continued
    campaign passes every run of the campaign it continues).
Outputs
    ``training_set`` (:class:`TrainingSetData`): the labelled configurations, in input order, failures left out,
    with one fidelity key and per label its ``sources`` (UUID of the calculation that made it); and ``failures``
    (``Dict``: ``n_failed``, ``n_total`` and ``failed``, a list of ``{'index': k, 'message': ...}``).
Exit status
    0 when it labelled within its failure tolerance. A non-zero status with ``training_set``: more runs failed
    than it tolerates (the labels are kept in the provenance, never trained on); without: nothing labelled.

The default labeller is cDFT, :class:`~.label.CdftLabelWorkChain`, whose inputs go in the namespace ``label``.
Another one is named in the namespace ``labeller``: ``workchain`` (its entry point, a ``Str``) and its inputs but
``configurations``. :class:`ReferenceLabelWorkChain` (``mmtp.reference.label``) is the second labeller shipped
here: the engine's analytic magnetic pair model as a job, for tests and rehearsals of whole campaigns.
"""

from __future__ import annotations

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain
from aiida.plugins import WorkflowFactory
from plumpy.ports import PortNamespace

from ..calculations.label_ref import MmtpLabelRefCalculation
from ..data.training_set import TrainingSetData
from .common import why_failed
from .label import CdftLabelWorkChain

__all__ = [
    'REFERENCE_LABELLER',
    'ReferenceLabelWorkChain',
    'define_labelling',
    'interface_problem',
    'labeller_of',
    'labelling_namespaces',
    'labelling_problem',
    'load_labeller',
    'uses_cdft',
]

#: The entry point of the analytic reference labeller (rehearsals and tests).
REFERENCE_LABELLER = 'mmtp.reference.label'


def interface_problem(cls: type) -> str | None:
    """What a work chain class lacks of the labeller interface (see the module), or None."""
    if not (isinstance(cls, type) and issubclass(cls, WorkChain)):
        return f'{getattr(cls, "__name__", cls)} is not a work chain'
    spec = cls.spec()
    port = spec.inputs.get('configurations')
    if port is None or isinstance(port, PortNamespace):
        return f'{cls.__name__} has no input `configurations`'
    if port.valid_type is not None and not issubclass(TrainingSetData, port.valid_type):
        return f'{cls.__name__}: its input `configurations` does not take a TrainingSetData'
    missing = [name for name in ('training_set', 'failures') if name not in spec.outputs]
    if missing:
        return f'{cls.__name__} has no output {", ".join(f"`{name}`" for name in missing)}'
    return None


def load_labeller(entry_point: str) -> type[WorkChain]:
    """The labeller work chain of ``entry_point`` (in ``aiida.workflows``); ValueError with a one-line reason if
    there is none or it lacks the interface."""
    try:
        cls = WorkflowFactory(entry_point)
    except Exception as exc:  # MissingEntryPointError, LoadingEntryPointError
        raise ValueError(f'labeller {entry_point!r}: no work chain of that entry point ({type(exc).__name__})') from exc
    problem = interface_problem(cls)
    if problem:
        raise ValueError(f'labeller {entry_point!r}: {problem} (see aiida_mmtp.workchains.labellers)')
    return cls


def define_labelling(spec, exclude: tuple[str, ...] = ()) -> None:
    """The two namespaces of the labelling step: ``label`` (the cDFT labeller's inputs) and ``labeller`` (another
    labeller: ``workchain``, its entry point, and its inputs). Exactly one is given (:func:`labelling_problem`)."""
    options = {'required': False, 'populate_defaults': False,
               'help': 'Inputs of the default labeller, cDFT (CdftLabelWorkChain).'}  # fmt: skip
    spec.expose_inputs(CdftLabelWorkChain, namespace='label', exclude=('configurations', *exclude),
                       namespace_options=options)  # fmt: skip
    spec.input_namespace('labeller', dynamic=True, required=False,
                         help='Another labeller: `workchain` (entry point of a work chain with the labeller interface, '
                         'aiida_mmtp.workchains.labellers) and its inputs but configurations.')  # fmt: skip
    spec.input('labeller.workchain', valid_type=orm.Str, required=False, help='Entry point of the labeller.')


def uses_cdft(value) -> bool:
    """Whether the inputs ``value`` (a mapping or ``process.inputs``) label by cDFT (namespace ``label``)."""
    return 'labeller' not in value or not value['labeller']


def labelling_problem(value, configurations: TrainingSetData | None = None) -> str | None:
    """Why the labelling namespaces of ``value`` cannot label, or None: exactly one of ``label`` and ``labeller``;
    a ``labeller`` names a work chain with the interface and its inputs pass its own validation (with
    ``configurations``, an unstored set, standing for what it will label)."""
    has_cdft, other = bool(value.get('label')), value.get('labeller')
    if has_cdft == bool(other):
        return 'give the labelling step exactly one of `label` (cDFT inputs) and `labeller` (another labeller)'
    if not other:
        return None
    if 'workchain' not in other:
        return 'labeller: give `workchain`, the entry point of the labeller'
    try:
        cls = load_labeller(other['workchain'].value)
    except ValueError as exc:
        return str(exc)
    if configurations is None:
        return None
    inputs = {key: item for key, item in other.items() if key != 'workchain'}
    inputs['configurations'] = configurations
    namespace = cls.spec().inputs
    error = namespace.validate(namespace.pre_process(inputs))
    return f'labeller {other["workchain"].value}: {error.message}' if error is not None else None


def labeller_of(process: WorkChain, reuse: orm.List | None = None) -> tuple[type[WorkChain], AttributeDict]:
    """The labeller of ``process`` (a work chain defined with :func:`define_labelling`) and its inputs, without
    ``configurations``. ``reuse`` (UUIDs of earlier cDFT runs) joins the cDFT inputs unless they name their own."""
    if uses_cdft(process.inputs):
        inputs = AttributeDict(process.exposed_inputs(CdftLabelWorkChain, 'label'))
        if reuse is not None:
            inputs.setdefault('reuse', reuse)
        return CdftLabelWorkChain, inputs
    inputs = AttributeDict({key: item for key, item in process.inputs.labeller.items() if key != 'workchain'})
    return load_labeller(process.inputs.labeller.workchain.value), inputs


def labelling_namespaces(process: WorkChain, reuse: orm.List | None = None) -> dict:
    """The labelling namespace of ``process`` as given (with ``reuse`` as in :func:`labeller_of`), to pass to a work
    chain defined with :func:`define_labelling`."""
    if uses_cdft(process.inputs):
        return {'label': dict(labeller_of(process, reuse)[1])}
    return {'labeller': dict(process.inputs.labeller)}


class ReferenceLabelWorkChain(WorkChain):
    """Label configurations by the engine's analytic magnetic pair model (a job): the labeller of rehearsals."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('code', valid_type=orm.AbstractCode, help='The engine (`mmtp`) code.')
        spec.input('configurations', valid_type=TrainingSetData,
                   help='Cells, positions, species (at most two: Cr-like, N-like) and moments (mu_B).')  # fmt: skip
        spec.input('free_moments', valid_type=orm.Bool, default=lambda: orm.Bool(False),
                   help="Label at the model's equilibrium moments (signs kept) instead of the given ones.")  # fmt: skip
        spec.input('options', valid_type=orm.Dict, required=False, help='metadata.options of the job.')
        spec.outline(cls.run_job, cls.results)
        spec.output('training_set', valid_type=TrainingSetData, required=False, help='The labelled configurations.')
        spec.output('failures', valid_type=orm.Dict, help='n_failed, n_total, failed (index, message).')
        spec.exit_code(401, 'ERROR_NO_LABELS', message='No configuration could be labelled: {message}')

    def run_job(self):
        inputs = {'code': self.inputs.code, 'configurations': self.inputs.configurations,
                  'free_moments': self.inputs.free_moments, 'metadata': {'call_link_label': 'label_ref'}}  # fmt: skip
        if 'options' in self.inputs:
            inputs['metadata']['options'] = self.inputs.options.get_dict()
        return ToContext(job=self.submit(MmtpLabelRefCalculation, **inputs))

    def results(self):
        node, total = self.ctx.job, len(self.inputs.configurations)
        if not node.is_finished_ok:  # the job labels all or nothing
            message = why_failed(node)
            failed = [{'index': k, 'run': node.uuid, 'message': message} for k in range(total)]
            self.out('failures', orm.Dict({'failed': failed, 'n_failed': total, 'n_total': total}).store())
            return self.exit_codes.ERROR_NO_LABELS.format(message=message)
        self.out('training_set', node.outputs.training_set)
        self.out('failures', orm.Dict({'failed': [], 'n_failed': 0, 'n_total': total}).store())
        self.report(f'labelled {total} configurations by the analytic reference model')
        return None
