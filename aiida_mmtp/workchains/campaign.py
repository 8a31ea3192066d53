"""``CampaignWorkChain`` (entry point ``mmtp.campaign``): the paper's active-learning protocol end to end.

1. Initial training set (:class:`InitialSetWorkChain`: lattice scales x
   {FM, AFM, random 50/50 states}, random displacements, moment perturbations,
   seeded and recorded), labelled by cDFT.
2. Fit and active set (:class:`FitWorkChain`).
3. Stages, each a simulation kind on its own starting configurations (moment
   equilibration of the initial set, relaxation of ideal cells, MD at given
   temperatures and lattice scales): active-learning iterations
   (:class:`ActiveLearningIterationWorkChain`) until one selects nothing and
   every simulation run finished; a stage whose runs failed and selected nothing
   stops the campaign with ``ERROR_STAGE_RUNS_FAILED`` (340), never "converged".

Validation: with ``test_set`` (a recipe like ``initial``, another seed), a held-out test set is
generated, labelled by cDFT at the campaign's fidelity (never trained on) and
every fit reports its errors on it beside the training errors
(``test_rmse_*`` in each iteration's summary; output ``test_set_labels``).
With ``reference`` (scan settings of :class:`~.reference.CdftReferenceWorkChain`), the last stage of a
converged campaign computes same-fidelity cDFT properties (equilibrium moments, a0, B, C11, C12, C44, FM-AFM
energy difference) in its own cell and sets the final potential beside them (outputs ``reference`` and
``reference_plot``; exit 360 if that validation fails, the potential kept).
Every label, initial ones included, passes label hygiene
(:mod:`aiida_mmtp.mtp.hygiene`) before it is used; refusals are reported.

``restart_from`` (the UUID or pk of an earlier campaign) continues it: every
label it made is reused (never recomputed), the stages it completed are
skipped, and the fit starts from its last potential. Labels are never lost
to an interruption (``verdi process kill``, an exception, a lost daemon):
the labels of an iteration's batch killed before it collected them are made
from its finished runs, and every labelling of the continued campaign (the
initial set and the test set when they were not finished, the iterations)
takes a configuration that a finished run of the earlier campaign labelled at
the same fidelity from that run instead of running it again (input
``reuse`` of :class:`CdftLabelWorkChain`: matched through the provenance
graph by configuration and fidelity; AiiDA caching is not needed). ``max_iterations`` caps
the iterations of one run; a campaign stopped by it returns what it has and
exits 401, to be continued with ``restart_from``.

Labelling: cDFT (:class:`CdftLabelWorkChain`, inputs in namespace ``label``) by default, or any work chain with the
labeller interface (namespace ``labeller``: ``workchain``, its entry point, and its inputs; :mod:`.labellers`), e.g.
the analytic reference model (``mmtp.reference.label``) that rehearses a protocol without DFT.

Progress: each iteration's node gets a label (``stage #n: k selected``) and
extras (candidates, selected, failed, max grade, RMSEs); the campaign's extras
hold ``iterations`` (one summary per iteration), ``completed_stages`` and
``converged``, so ``verdi process list`` and a QueryBuilder show where it is.
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida.common.datastructures import CalcJobState
from aiida.common.links import LinkType
from aiida.engine import ToContext, WorkChain, if_, while_
from aiida.schedulers.datastructures import JobState

from ..calculations.abinit_input import sphere_radii_problem
from ..calculations.engine import SIMULATION_PARAMETERS, MmtpSimulateCalculation, did_you_mean, simulation_problem
from ..calculations.functions import merge_training_sets, screen_new_labels
from ..data.active_set import ActiveSetData
from ..data.potential import MtpPotentialData
from ..data.training_set import TrainingSetData
from ..mtp.hygiene import HygieneRule
from ..mtp.structures import min_distance, scaled, strained
from .common import engine_metadata, why_failed
from .fit import FitWorkChain, fit_drift, rmse_summary
from .functions import (
    GENERATION,
    configurations,
    generate_configurations,
    generation_settings,
    strain_list,
    strain_prepared,
    strains_problem,
    structure_to_configuration,
    subset,
)
from .initial import InitialSetWorkChain, free_moments_problem
from .iteration import ActiveLearningIterationWorkChain
from .label import configuration_problem, interrupted_labels, kpoint_problem
from .labellers import define_labelling, labeller_of, labelling_namespaces, labelling_problem, uses_cdft

__all__ = ['STAGE', 'CampaignWorkChain']

#: Call-link label of the labelling of the held-out test set.
TEST_SET = 'test_set'
ITERATION = ActiveLearningIterationWorkChain.__name__

#: Keys of one stage and their defaults. ``start``: 'initial' (the initial configurations, unlabelled)
#: or 'ideal' (undistorted cells at ``scales`` in ``states``); ``simulation``: parameters of mmtp.simulate.
STAGE = {
    'name': None,
    'start': 'ideal',
    'structures': None,  # keys of `structures` to use (default: all)
    'scales': [1.0],
    'states': ['FM', 'AFM', 'random'],
    'n_random': 2,
    'seed': 1,
    'max_iterations': 10,
    # [[component, magnitude], ...] or {FM/AFM/random: [...]}: strained copies of the start configurations (Voigt)
    'strains': [],
    # {kind: equilibrate | relax, ...}: before the stage, its start cells are equilibrated (moments) or relaxed by the
    # current potential, ungraded, and any strains apply to the result (the paper strains equilibrated cells)
    'prepare': None,
    'simulation': None,  # mmtp.simulate parameters, or {'kind': 'label'}: label the start configurations directly
}


def _stages(value) -> list[dict]:
    return [{**STAGE, **stage} for stage in value['stages'].get_list()]


def _magnetic(value, species: list[str]) -> tuple[dict[str, float], str | None]:
    moments = {el: float(m) for el, m in value['magnetic_moments'].get_dict().items() if float(m) != 0.0}
    if not moments:
        return moments, 'no magnetic species: give magnetic_moments, e.g. {"Cr": 2.0} (mu_B), with a non-zero size'
    absent = sorted(set(moments) - set(species))
    if absent:
        return moments, f'magnetic species {", ".join(absent)} not in the structures ({", ".join(species)})'
    return moments, None


def _reference_problem(settings: dict, structures, potential) -> str | None:
    """Why the ``reference`` settings (scan settings and ``cell``: the structure to scan) cannot run, or None."""
    from .reference import scan_settings

    settings = dict(settings)
    cell = settings.pop('cell', None)
    if cell is not None and cell not in structures:
        return f'no structure called {cell!r} (structures: {", ".join(sorted(structures))})'
    try:
        scans = scan_settings(settings)
    except ValueError as exc:
        return str(exc)
    ranges = potential.base.attributes.get('moment_ranges') or []
    top = min((max(abs(lo), abs(hi)) for lo, hi in ranges if max(abs(lo), abs(hi)) >= 1.0), default=None)
    if top is not None and max(scans['moments']) > top + 1e-9:
        return f"moments reach {max(scans['moments'])} mu_B, beyond the potential's moment range ({top:g} mu_B)"
    return None


def validate_inputs(value, ctx) -> str | None:
    """Everything that can be checked before anything runs: species, moments, cells, stages, the initial set."""
    if any(key not in value for key in ('structures', 'potential', 'magnetic_moments', 'stages')):
        return None
    potential = value['potential']
    species = potential.species
    if not value['structures']:
        return 'give at least one structure'
    elements = sorted({kind.symbol for s in value['structures'].values() for kind in s.kinds})
    if sorted(species) != elements:
        return f'the potential is for {", ".join(species)}, the structures have {", ".join(elements)}'
    if potential.base.attributes.get('magnetic_basis_size') < 2:
        return 'the potential is not magnetic (magnetic_basis_size 1): a magnetic campaign needs N_psi >= 2'
    moments, problem = _magnetic(value, species)
    if problem:
        return problem
    ranges = potential.base.attributes.get('moment_ranges')
    for el, m in moments.items():
        hi = ranges[species.index(el)][1]
        if abs(m) > hi:
            return f'the moment of {el} ({m} mu_B) lies outside the potential range (M_max {hi} mu_B)'
    stages = _stages(value)
    if not stages:
        return 'give at least one stage'
    initial = value['initial'].get_dict() if 'initial' in value else {}
    try:
        gen = generation_settings({**initial, 'species': species, 'moments': moments})
    except ValueError as exc:
        return str(exc)
    cells = {key: structure_to_configuration(s, species) for key, s in value['structures'].items()}
    r_min = potential.base.attributes.get('min_dist')
    scales = [float(x) for x in gen['scales']] + [float(x) for st in stages for x in st['scales']]
    for key, cell in cells.items():
        d = min_distance(scaled(cell, min(scales)))
        if d < r_min:
            return (f'structure {key} is smaller than the potential allows: at lattice scale {min(scales):g} its '
                    f'atoms are {d:.3f} A apart, closer than the potential min_dist {r_min} A')  # fmt: skip
    if 'reference' in value:
        problem = _reference_problem(value['reference'].get_dict(), value['structures'], potential)
        if problem:
            return f'reference: {problem}'
    names = [st['name'] for st in stages]
    if None in names or len(set(names)) < len(names):
        return f'every stage needs a unique name, got {names}'
    for st in stages:
        for key in sorted(set(st) - set(STAGE)):
            return f'stage {st["name"]}: unknown key {key!r}{did_you_mean(key, STAGE)} (known: {", ".join(STAGE)})'
        sim = st['simulation'] or {}
        if sim.get('kind') not in (*SIMULATION_PARAMETERS, 'label'):
            return f'stage {st["name"]}: simulation.kind must be {", ".join(SIMULATION_PARAMETERS)} or label'
        if st['strains'] and st['start'] != 'ideal':
            return f'stage {st["name"]}: strains apply to ideal cells (start: ideal)'
        problem = strains_problem(st['strains']) if st['strains'] else None
        if problem:
            return f'stage {st["name"]}: {problem}'
        if st['prepare'] is not None:
            prepare = st['prepare'] if isinstance(st['prepare'], dict) else {}
            if prepare.get('kind') not in ('equilibrate', 'relax') or st['start'] != 'ideal':
                return f'stage {st["name"]}: prepare takes {{kind: equilibrate or relax, ...}} for ideal cells'
            problem = simulation_problem(prepare)
            if problem:
                return f'stage {st["name"]}: prepare: {problem}'
        if sim['kind'] == 'label' and set(sim) != {'kind'}:
            return f'stage {st["name"]}: a label stage takes no simulation parameters, got {", ".join(sorted(sim))}'
        problem = simulation_problem(sim) if sim['kind'] != 'label' else None
        if problem:
            return f'stage {st["name"]}: simulation: {problem}'
        if int(st['max_iterations']) < 1:
            return f'stage {st["name"]}: max_iterations must be at least 1, got {st["max_iterations"]}'
        if st['start'] not in ('initial', 'ideal'):
            return f'stage {st["name"]}: start must be "initial" or "ideal", got {st["start"]!r}'
        missing = sorted(set(st['structures'] or []) - set(cells))
        if missing:
            return f'stage {st["name"]}: no structure called {", ".join(missing)}'
    problem = labelling_problem(value)
    if problem:
        return problem
    if not uses_cdft(value):
        problem = _labeller_problem(value, cells, gen, species)
        if problem:
            return problem
    elif 'cdft' in value['label'] and 'abinit' in value['label']['cdft']:
        abinit = value['label']['cdft']['abinit']
        params, pseudos = abinit['parameters'].get_dict(), dict(abinit.get('pseudos', {}))
        problem = sphere_radii_problem(params.get('ratsph') or {}, species, r_min)
        if problem:
            return f'cdft: {problem}'
        try:
            configs = configurations(cells, gen)
        except ValueError as exc:
            return str(exc)
        if not configs:
            return f'the initial set is empty: no cell has any of the states {gen["states"]}'
        for k, cfg in enumerate(configs):
            problem = configuration_problem(cfg, species, params, pseudos)
            if problem:
                return f'initial configuration {k + 1} ({cfg.features["origin"]}): {problem}'
        if 'test_set' in value:
            try:
                test = generation_settings({**initial, **value['test_set'].get_dict(), 'species': species,
                                            'moments': moments})  # fmt: skip
                tests = configurations(cells, test)
            except ValueError as exc:
                return f'test_set: {exc}'
            if int(test['n_displaced']) < 1:
                return 'test_set: give n_displaced >= 1 (the held-out set is made of displaced cells)'
            for k, cfg in enumerate(tests):
                problem = configuration_problem(cfg, species, params, pseudos)
                if problem:
                    return f'test configuration {k + 1} ({cfg.features["origin"]}): {problem}'
            gen = {**gen, 'scales': [*gen['scales'], *test['scales']]}
        every, names = _every_cell(cells, gen, stages)
        problem = kpoint_problem(every, value['label']['cdft'], names)
        if problem:
            return problem
    for key in ('max_selected', 'max_iterations', 'max_jobs'):
        if value.get(key) is not None and value[key].value < 1:
            return f'{key} must be at least 1, got {value[key].value}'
    label = value.get('label') or {}
    if label.get('max_concurrent') is not None and label['max_concurrent'].value < 1:
        return f'cdft.max_concurrent must be at least 1, got {label["max_concurrent"].value}'
    fraction = label.get('max_failure_fraction')
    if fraction is not None and not 0 <= fraction.value <= 1:
        return f'cdft.max_failure_fraction must lie in [0, 1], got {fraction.value}'
    if 'hygiene' in value:
        try:
            HygieneRule.from_dict(value['hygiene'].get_dict())
        except (TypeError, ValueError) as exc:
            return str(exc)
    return None


def _labeller_problem(value, cells: dict, gen: dict, species: list[str]) -> str | None:
    """Why the campaign's own labeller (namespace ``labeller``) cannot label its initial set, or None: the labeller
    validates its inputs with the initial configurations; the cDFT validation (``reference``) and the free-moment
    labels of ``equilibrium_moments`` need what the labeller may lack."""
    if 'reference' in value:
        return 'reference: the same-fidelity validation runs cDFT scans; it needs the cDFT labeller (`label`)'
    try:
        initial = TrainingSetData(configurations(cells, gen), species)
    except ValueError as exc:
        return str(exc)
    problem = labelling_problem(value, initial)
    if problem:
        return problem
    return free_moments_problem({'labeller': value['labeller'], 'parameters': orm.Dict(gen)})


def _every_cell(cells: dict, gen: dict, stages: list[dict]) -> tuple[list, list[str]]:
    """Every cell (rows, A) the campaign will label, with a name: each structure at each lattice scale, strained."""
    out, names = [], []
    for key, cell in cells.items():
        for scale in sorted({float(x) for x in gen['scales']} | {float(x) for st in stages for x in st['scales']}):
            out.append(scaled(cell, scale).cell)
            names.append(f'structure {key} at scale {scale:g}')
        for st in stages:
            for scale in st['scales']:
                for component, eps in strain_list(st['strains']):
                    out.append(strained(scaled(cell, float(scale)), component, float(eps)).cell)
                    names.append(f'structure {key} at scale {float(scale):g} strained {component} {float(eps):+g}')
    return out, names


def previous_campaign(identifier: str) -> orm.WorkflowNode:
    """The campaign node named by UUID or pk; ValueError if it is not a campaign."""
    try:
        node = orm.load_node(int(identifier)) if identifier.isdigit() else orm.load_node(identifier)
    except Exception as exc:  # NotExistent, MultipleObjectsError
        raise ValueError(f'no node {identifier}: {exc}') from exc
    if node.process_type is None or not node.process_type.endswith('mmtp.campaign'):
        raise ValueError(f'{node.__class__.__name__}<{node.pk}> is not a campaign')
    return node


def _is_test_labelling(node: orm.ProcessNode | None) -> bool:
    link = node.base.links.get_incoming(link_type=LinkType.CALL_WORK).first() if node is not None else None
    return link is not None and link.link_label == TEST_SET


def _labeller_type(campaign: orm.WorkflowNode) -> str | None:
    """The process type of the labeller of ``campaign`` when it is not cDFT, or None."""
    from aiida.plugins.entry_point import format_entry_point_string

    if 'labeller' not in campaign.inputs or 'workchain' not in campaign.inputs.labeller:
        return None
    return format_entry_point_string('aiida.workflows', campaign.inputs.labeller.workchain.value)


def labels_of(campaign: orm.WorkflowNode) -> list[TrainingSetData]:
    """Every labelled set made under ``campaign`` and the campaigns it continued, the held-out test sets excepted
    (they are never trained on): the outputs of ``collect_labels`` (cDFT batches, interrupted ones included) or of
    the campaign's own labeller."""
    labeller = _labeller_type(campaign)
    sets = []
    for node in campaign.called_descendants:
        if isinstance(node, orm.CalcFunctionNode) and node.process_label == 'collect_labels' and node.is_finished_ok:
            if not _is_test_labelling(node.caller):
                sets.append(node.outputs.result)
        elif labeller is not None and node.process_type == labeller and 'training_set' in node.outputs:
            if not _is_test_labelling(node):
                sets.append(node.outputs.training_set)
    if 'restart_from' in campaign.inputs:
        sets += labels_of(previous_campaign(str(campaign.inputs.restart_from.value)))
    return sorted(sets, key=lambda s: s.ctime)


def finished_runs(campaign: orm.WorkflowNode) -> list[str]:
    """UUIDs of every cDFT run (CdftBaseWorkChain) that finished well under ``campaign`` and the campaigns it
    continued, the held-out test set's included."""
    runs = [node.uuid for node in campaign.called_descendants
            if node.process_label == 'CdftBaseWorkChain' and node.is_finished_ok]  # fmt: skip
    if 'restart_from' in campaign.inputs:
        runs += finished_runs(previous_campaign(str(campaign.inputs.restart_from.value)))
    return runs


def job_phase(calc: orm.CalcJobNode) -> str:
    """Where a job that has not ended is: ``preparing`` (created, uploading, submitting), ``queued`` (waiting in the
    scheduler's queue, held included), ``running``, ``retrieving`` (and parsing), or ``with scheduler`` (state not
    yet known)."""
    state = calc.get_state()
    if state in (CalcJobState.RETRIEVING, CalcJobState.PARSING, CalcJobState.STASHING):
        return 'retrieving'
    if state != CalcJobState.WITHSCHEDULER:
        return 'preparing'
    scheduler = calc.get_scheduler_state()
    if scheduler in (JobState.QUEUED, JobState.QUEUED_HELD):
        return 'queued'
    if scheduler in (JobState.RUNNING, JobState.SUSPENDED):
        return 'running'
    return 'with scheduler'


def jobs_in_flight(campaign: orm.WorkflowNode) -> dict[str, list[orm.CalcJobNode]]:
    """The jobs under ``campaign`` that have not ended, by :func:`job_phase`, oldest first."""
    phases: dict[str, list[orm.CalcJobNode]] = {}
    calcs = [node for node in campaign.called_descendants
             if isinstance(node, orm.CalcJobNode) and not node.is_terminated]  # fmt: skip
    for calc in sorted(calcs, key=lambda node: node.ctime):
        phases.setdefault(job_phase(calc), []).append(calc)
    return phases


def uncollected_labels(campaign: orm.WorkflowNode) -> list[TrainingSetData]:
    """Labels of the iterations' cDFT batches that were interrupted before they collected them (the
    configurations were selected, the runs finished, the batch was killed): made from their runs now."""
    sets = []
    for node in campaign.called_descendants:
        in_iteration = node.caller is not None and node.caller.process_label == ITERATION
        if node.process_label == 'CdftLabelWorkChain' and in_iteration:
            labels = interrupted_labels(node)
            if labels is not None:
                sets.append(labels)
    return sets


def test_set_of(campaign: orm.WorkflowNode) -> TrainingSetData | None:
    """The labelled held-out test set of ``campaign`` (or of the campaign it continued), or None."""
    if 'test_set_labels' in campaign.outputs:
        return campaign.outputs.test_set_labels
    for node in campaign.called:
        if _is_test_labelling(node) and 'training_set' in node.outputs:
            return node.outputs.training_set
    if 'restart_from' in campaign.inputs:
        return test_set_of(previous_campaign(str(campaign.inputs.restart_from.value)))
    return None


def held_out(parameters: orm.Dict, structures) -> TrainingSetData:
    """The test configurations of a recipe: its displaced cells only (ideal cells may be in the training set)."""
    generated = generate_configurations(parameters, **structures)
    keep = [k for k, origin in enumerate(generated.origins) if ':displaced0:' not in origin]
    if not keep:
        raise ValueError('the test-set recipe gives no displaced configuration: set n_displaced >= 1')
    return subset(generated, orm.List(keep))


class CampaignWorkChain(WorkChain):
    """Initial set, fit, then stages of active-learning iterations until nothing is selected."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('code', valid_type=orm.AbstractCode, help='The engine (`mmtp`) code.')
        spec.input_namespace('structures', valid_type=orm.StructureData, dynamic=True,
                             help='Cells (e.g. primitive and conventional), by name.')  # fmt: skip
        spec.input('magnetic_moments', valid_type=orm.Dict, help='{element: moment size, mu_B} of magnetic species.')
        spec.input('potential', valid_type=MtpPotentialData, help='Starting potential (untrained or trained).')
        spec.input(
            'initial',
            valid_type=orm.Dict,
            required=False,
            help=f'Initial-set recipe: {", ".join(k for k in GENERATION if k not in ("species", "moments"))}.',
        )
        spec.input('stages', valid_type=orm.List, help='Stages (dicts): see aiida_mmtp.workchains.campaign.STAGE.')
        spec.input('max_selected', valid_type=orm.Int, default=lambda: orm.Int(20), help='Selections per iteration.')
        spec.input(
            'max_iterations',
            valid_type=orm.Int,
            default=lambda: orm.Int(100),
            help='Iterations in this run (all stages); then exit 401 and continue with restart_from.',
        )
        spec.input('max_jobs', valid_type=orm.Int, default=lambda: orm.Int(1), help='Simulation jobs at a time.')
        spec.input('train_settings', valid_type=orm.Dict, required=False, help='Settings of mmtp.train.')
        spec.input('engine_options', valid_type=orm.Dict, required=False, help='metadata.options of engine jobs.')
        spec.input(
            'restart_from',
            valid_type=(orm.Str, orm.Int),
            required=False,
            help='UUID or pk of a campaign to continue: its labels are reused, its completed stages skipped.',
        )
        spec.input('hygiene', valid_type=orm.Dict, default=lambda: orm.Dict({}),
                   help='Label hygiene limits (aiida_mmtp.mtp.hygiene.HygieneRule) for every label, the initial ones '
                   'included; {} takes the defaults.')  # fmt: skip
        spec.input('test_set', valid_type=orm.Dict, required=False,
                   help='Recipe of the held-out test set (keys of `initial`; its ideal, undisplaced cells are left '
                   'out): labelled by cDFT, never trained on, its errors reported by every fit.')  # fmt: skip
        spec.input('warnings', valid_type=orm.List, required=False,
                   help='What the user must know about these settings (e.g. unconverged labels): reported at the '
                   'start, kept in the extras and the summary.')  # fmt: skip
        spec.input('reference', valid_type=orm.Dict, required=False,
                   help='Validation, the last stage: same-fidelity cDFT scans (CdftReferenceWorkChain settings, '
                   'and `cell`: which structure, default the first by name) with the final potential beside '
                   'them.')  # fmt: skip
        define_labelling(spec)
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            if_(cls.needs_labels)(cls.label_initial),
            cls.fit_initial,
            while_(cls.next_stage)(
                cls.prepare_stage,
                if_(cls.needs_preparation)(cls.run_preparation, cls.apply_preparation),
                while_(cls.stage_continues)(cls.run_iteration, cls.inspect_iteration),
            ),
            if_(cls.validates)(cls.run_reference),
            cls.results,
        )  # fmt: skip
        spec.output('potential', valid_type=MtpPotentialData, help='The final potential.')
        spec.output('active_set', valid_type=ActiveSetData, help='Its active set.')
        spec.output('training_set', valid_type=TrainingSetData, help='Every label, each linked to its cDFT run.')
        spec.output('summary', valid_type=orm.Dict, help='Per iteration: stage, candidates, selected, RMSEs.')
        spec.output('test_set_labels', valid_type=TrainingSetData, required=False,
                    help='The held-out test set, labelled by cDFT (never trained on).')  # fmt: skip
        spec.output(
            'reference',
            valid_type=orm.Dict,
            required=False,
            help='The final potential beside same-fidelity cDFT: reference, potential, comparison rows.',
        )
        spec.output(
            'reference_plot',
            valid_type=orm.SinglefileData,
            required=False,
            help='E(m) and E(V): cDFT points and the potential (PNG).',
        )
        spec.exit_code(300, 'ERROR_RESTART', message='Cannot continue from {identifier}: {message}')
        spec.exit_code(310, 'ERROR_INITIAL_LABELS', message='The initial set could not be labelled: {message}')
        spec.exit_code(315, 'ERROR_TEST_LABELS', message='The test set could not be labelled: {message}')
        spec.exit_code(320, 'ERROR_FIT', message='The fit failed: {message}')
        spec.exit_code(330, 'ERROR_ITERATION', message='Iteration {n} of stage {stage} failed: {message}')
        spec.exit_code(340, 'ERROR_STAGE_RUNS_FAILED',
                       message='Stage {stage} is not converged: its simulation runs failed and nothing was selected '
                       '({message})')  # fmt: skip
        spec.exit_code(345, 'ERROR_PREPARATION',
                       message='Stage {stage}: its start configurations could not be prepared: {message}')  # fmt: skip
        spec.exit_code(350, 'ERROR_TOO_MANY_FAILURES',
                       message='{what}: more cDFT runs failed than tolerated ({message}); every good label is kept '
                       '(continue with restart_from)')  # fmt: skip
        spec.exit_code(360, 'ERROR_REFERENCE',
                       message='The potential is trained (outputs kept), but its validation against same-fidelity '
                       'cDFT failed: {message}')  # fmt: skip
        spec.exit_code(401, 'ERROR_ITERATION_LIMIT',
                       message='Stopped after {n} iterations (max_iterations) before convergence; '
                       'continue with restart_from.')  # fmt: skip
        spec.exit_code(
            402,
            'ERROR_STAGE_NOT_CONVERGED',
            message='Stage(s) {stages} still selected configurations at their max_iterations.',
        )

    @classmethod
    def get_builder_from_protocol(
        cls,
        abinit_code: orm.AbstractCode | None,
        mmtp_code: orm.AbstractCode,
        structure: orm.StructureData | None = None,
        protocol: str | None = None,
        overrides: dict | None = None,
        options: dict | None = None,
        labeller: dict | None = None,
    ):
        """A ready builder for ``protocol`` (``fast``, ``balanced``, ``paper``; see protocols/campaign.yaml).

        ``structure``: the conventional cell (default: 8-atom B1 CrN, a = 4.15 A); ``overrides``: any protocol
        key (e.g. ``{'cdft': {'parameters': {'ecut': 30}}, 'max_selected': 10}``); ``options``: metadata options
        of the ABINIT jobs (resources, walltime, queue), merged over the protocol's. ``labeller``: another labeller
        than cDFT, ``{'workchain': entry point, **its inputs}`` (e.g. ``{'workchain': 'mmtp.reference.label',
        'code': mmtp_code}``); the protocol's cDFT settings, its warning about them and its cDFT validation
        (``reference``) are then left out, and ``abinit_code`` may be None.
        """
        from ..mtp.potential import Potential
        from ..protocols import get_protocol_inputs, protocol_warning

        inputs = get_protocol_inputs('campaign', protocol, overrides)
        structure = structure if structure is not None else crn_structure()
        a = cubic_lattice_parameter(structure)
        inputs['initial'] = lattice_scales(inputs['initial'], a, 'initial')
        if inputs.get('test_set'):
            inputs['test_set'] = lattice_scales(inputs['test_set'], a, 'test_set')
        inputs['stages'] = [lattice_scales(st, a, f'stage {st.get("name")}') for st in inputs['stages']]
        kinds = {kind.name: kind.symbol for kind in structure.kinds}
        species = list(dict.fromkeys(kinds[site.kind_name] for site in structure.sites))
        moments = {el: float(m) for el, m in inputs['magnetic_moments'].items()}
        pot = inputs['potential']
        m_max = [pot['m_max_factor'] * abs(moments[el]) if el in moments else pot['m_max_other'] for el in species]
        potential = Potential.from_level(
            int(pot['level']), species, r_min=float(pot['min_dist']), r_cut=float(pot['max_dist']),
            n_phi=int(pot['radial_basis_size']), n_psi=int(pot['magnetic_basis_size']), m_max=m_max,
            symmetric=pot['energy_mode'] == 'symmetric',
        )  # fmt: skip
        builder = cls.get_builder()
        builder.code = mmtp_code
        builder.structures = build_cells(structure, inputs['cells'])
        builder.magnetic_moments = orm.Dict(moments)
        builder.potential = MtpPotentialData(potential)
        builder.initial = orm.Dict(inputs['initial'])
        builder.stages = orm.List(inputs['stages'])
        for key in ('max_selected', 'max_iterations', 'max_jobs'):
            builder[key] = orm.Int(inputs[key])
        builder.train_settings = orm.Dict(inputs['train_settings'])
        builder.hygiene = orm.Dict(inputs.get('hygiene', {}))
        if inputs.get('test_set'):
            builder.test_set = orm.Dict(inputs['test_set'])
        builder.engine_options = orm.Dict(engine_options(inputs, mmtp_code))
        builder.metadata.label = f'{"".join(species)} {protocol or "default"} campaign'
        builder.metadata.description = f'Active-learning campaign, protocol {protocol or "default"}'
        if labeller is not None:
            builder.labeller = {key: orm.Str(value) if key == 'workchain' else value for key, value in labeller.items()}
            return builder
        if inputs.get('reference'):
            builder.reference = orm.Dict(inputs['reference'])
        cdft = inputs['cdft']
        family = orm.load_group(cdft['pseudo_family'])
        builder.label.max_concurrent = orm.Int(cdft['max_concurrent'])
        builder.label.max_failure_fraction = orm.Float(cdft['max_failure_fraction'])
        if (cdft.get('kpoints_mesh') is None) == (cdft.get('kpoints_distance') is None):
            raise ValueError(
                'cdft: give exactly one of kpoints_mesh (one mesh for every cell) and kpoints_distance (1/A)'
            )
        if cdft.get('kpoints_mesh') is not None:
            mesh = orm.KpointsData()
            mesh.set_kpoints_mesh([int(n) for n in cdft['kpoints_mesh']])
            builder.label.cdft.kpoints = mesh
        else:
            builder.label.cdft.kpoints_distance = orm.Float(cdft['kpoints_distance'])
        builder.label.cdft.max_iterations = orm.Int(1 + int(cdft['max_restarts']))
        abinit = builder.label.cdft.abinit
        abinit.code = abinit_code
        abinit.parameters = orm.Dict({'constrained': species, **cdft['parameters']})
        abinit.pseudos = family.get_pseudos(elements=species)
        mpiprocs = int(cdft.get('mpiprocs', 1))
        if mpiprocs < 1:
            raise ValueError(f'cdft.mpiprocs must be at least 1, got {mpiprocs}')
        resources = {'num_machines': 1, 'num_mpiprocs_per_machine': mpiprocs}
        abinit.metadata.options = {'resources': resources, 'withmpi': mpiprocs > 1, **cdft.get('options', {}),
                                   **(options or {})}  # fmt: skip
        warning = protocol_warning('campaign', protocol)
        if warning:
            builder.warnings = orm.List([warning])
        return builder

    # ------------------------------------------------------------------ helpers
    def _species(self) -> list[str]:
        return self.inputs.potential.species

    def _generation(self, **overrides) -> orm.Dict:
        species = self._species()
        moments, _ = _magnetic(self.inputs, species)
        base = self.inputs.initial.get_dict() if 'initial' in self.inputs else {}
        return orm.Dict({**base, 'species': species, 'moments': moments, **overrides})

    def _screen(self, labels: TrainingSetData, what: str) -> dict:
        """Label hygiene of ``labels`` among themselves; refusals reported and kept in ``ctx.refused`` by ``what``."""
        screened = screen_new_labels(new=labels, rule=self.inputs.hygiene)
        refused = screened['refused'].get_dict()
        for item in refused['refused']:
            self.report(f'{what}: label {item["index"] + 1} refused by label hygiene: {item["reason"]}')
        self.ctx.setdefault('refused', {})[what.replace(' ', '_')] = [item['reason'] for item in refused['refused']]
        return screened

    def _labelling(self) -> dict:
        """The labelling namespace to pass on; a continued campaign's cDFT batches reuse the runs of the one it
        continues."""
        return labelling_namespaces(self, self.ctx.get('reuse'))

    def _warnings(self) -> list[str]:
        return list(self.inputs.warnings.get_list()) if 'warnings' in self.inputs else []

    def _extras(self) -> None:
        n_training = len(self.ctx.training_set) if 'training_set' in self.ctx else 0
        self.node.base.extras.set_many({'warnings': self._warnings(), 'iterations': self.ctx.iterations,
                                        'completed_stages': self.ctx.completed, 'stage': self.ctx.get('stage_name'),
                                        'n_training': n_training})  # fmt: skip

    # ------------------------------------------------------------------ steps
    def setup(self):
        for warning in self._warnings():
            self.report(f'WARNING: {warning}')
        self.ctx.stages = _stages(self.inputs)
        self.ctx.iterations, self.ctx.completed, self.ctx.unconverged = [], [], []
        self.ctx.stage_index = -1
        self.ctx.n_run = 0
        self.ctx.start_potential = self.inputs.potential
        if 'restart_from' in self.inputs:
            self.ctx.initial = generate_configurations(self._generation(), **self.inputs.structures)
            identifier = str(self.inputs.restart_from.value)
            try:
                previous = previous_campaign(identifier)
            except ValueError as exc:
                return self.exit_codes.ERROR_RESTART.format(identifier=identifier, message=str(exc))
            runs = finished_runs(previous)
            if runs:  # every labelling of this run first takes what an earlier run labelled at its fidelity
                self.ctx.reuse = orm.List(runs).store()
            sets = labels_of(previous) + uncollected_labels(previous)
            if not sets:  # interrupted before its initial set was collected: label it, reusing the finished runs
                self.report(f'continuing {previous.process_label}<{previous.pk}>: no labelled set was collected; '
                            f'the initial set is labelled again, reusing its {len(runs)} finished runs')  # fmt: skip
                self._extras()
                return None
            merged = merge_training_sets(**{f'set_{k:04d}': s for k, s in enumerate(sets)})
            screened = self._screen(merged, 'reused labels')
            if 'accepted' not in screened:
                return self.exit_codes.ERROR_RESTART.format(identifier=identifier, message='no label passed hygiene')
            self.ctx.training_set = screened['accepted']
            tested = test_set_of(previous)
            if tested is not None and 'test_set' in self.inputs:
                self.ctx.test_set = tested
            self.ctx.completed = list(previous.base.extras.get('completed_stages', []))
            self.ctx.iterations = list(previous.base.extras.get('iterations', []))
            fits = [n for n in previous.called_descendants
                    if n.process_label == 'MmtpTrainCalculation' and n.is_finished_ok]  # fmt: skip
            if fits:
                self.ctx.start_potential = max(fits, key=lambda n: n.ctime).outputs.potential
            self.report(f'continuing {previous.process_label}<{previous.pk}>: {len(self.ctx.training_set)} labels '
                        f'reused, stages done: {", ".join(self.ctx.completed) or "none"}')  # fmt: skip
        self._extras()
        return None

    def needs_labels(self) -> bool:
        return 'training_set' not in self.ctx or ('test_set' in self.inputs and 'test_set' not in self.ctx)

    def label_initial(self):
        """Label the initial set and the held-out test set (at once) where they are not labelled yet."""
        if 'training_set' not in self.ctx:
            inputs = {'structures': self.inputs.structures, 'parameters': self._generation(), **self._labelling(),
                      'metadata': {'call_link_label': 'initial_set', 'label': 'initial set'}}  # fmt: skip
            self.report('generating and labelling the initial set')
            self.to_context(initial_set=self.submit(InitialSetWorkChain, **inputs))
        if 'test_set' in self.inputs and 'test_set' not in self.ctx:
            configurations = held_out(self._generation(**self.inputs.test_set.get_dict()), self.inputs.structures)
            labeller, inputs = labeller_of(self, self.ctx.get('reuse'))
            inputs.update(configurations=configurations, metadata={'call_link_label': TEST_SET, 'label': 'test set'})
            self.report(f'labelling the held-out test set: {len(configurations)} configurations')
            self.to_context(test_labels=self.submit(labeller, **inputs))

    def _fit_inputs(self, potential, training_set) -> dict:
        """The ``train`` namespace of a FitWorkChain (with the test set, where there is one)."""
        train = {'code': self.inputs.code, 'potential': potential, 'training_set': training_set,
                 'metadata': engine_metadata(self.inputs)}  # fmt: skip
        if 'train_settings' in self.inputs:
            train['settings'] = self.inputs.train_settings
        if 'test_set' in self.ctx:
            train['test_set'] = self.ctx.test_set
        return train

    def _usable_labels(self, node, what: str, exit_code):
        """The labels of a finished labelling of ``what``, screened by label hygiene, or the exit code that says
        why there are none to use (failed beyond its budget: ERROR_TOO_MANY_FAILURES)."""
        if 'training_set' not in node.outputs:
            return exit_code.format(message=why_failed(node))
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_TOO_MANY_FAILURES.format(what=what, message=why_failed(node))
        screened = self._screen(node.outputs.training_set, what)
        if 'accepted' not in screened:
            return exit_code.format(message='every label was refused by label hygiene')
        return screened['accepted']

    def fit_initial(self):
        if 'initial_set' in self.ctx:
            labels = self._usable_labels(self.ctx.initial_set, 'initial set', self.exit_codes.ERROR_INITIAL_LABELS)
            if not isinstance(labels, TrainingSetData):
                return labels
            self.ctx.initial = self.ctx.initial_set.outputs.configurations
            self.ctx.training_set = labels
        if 'test_labels' in self.ctx:
            labels = self._usable_labels(self.ctx.test_labels, 'test set', self.exit_codes.ERROR_TEST_LABELS)
            if not isinstance(labels, TrainingSetData):
                return labels
            self.ctx.test_set = labels
            self.report(f'test set: {len(labels)} labels held out')
        train = self._fit_inputs(self.ctx.start_potential, self.ctx.training_set)
        self.report(f'initial fit on {len(self.ctx.training_set)} configurations')
        return ToContext(fit=self.submit(FitWorkChain, train=train, metadata={'call_link_label': 'initial_fit'}))

    def next_stage(self) -> bool:
        if 'fit' in self.ctx:  # the initial fit
            node = self.ctx.pop('fit')
            if not node.is_finished_ok:
                self.ctx.failed = self.exit_codes.ERROR_FIT.format(message=why_failed(node))
                return False
            self.ctx.potential = node.outputs.potential
            self.ctx.active_set = node.outputs.active_set
            self.ctx.last_rmse = rmse_summary(node.outputs.report.get_dict())
        if 'failed' in self.ctx or self.ctx.n_run >= self.inputs.max_iterations.value:
            return False
        self.ctx.stage_index += 1
        while self.ctx.stage_index < len(self.ctx.stages):
            if self.ctx.stages[self.ctx.stage_index]['name'] not in self.ctx.completed:
                return True
            self.ctx.stage_index += 1
        return False

    def prepare_stage(self):
        stage = self.ctx.stages[self.ctx.stage_index]
        self.ctx.stage_name = stage['name']
        self.ctx.stage_iteration = 0
        self.ctx.stage_done = False
        keys = stage['structures'] or sorted(self.inputs.structures)
        if stage['start'] == 'initial':
            configurations = self.ctx.initial
        else:
            strains = [] if stage['prepare'] else stage['strains']  # a prepared stage strains after preparing
            params = self._generation(scales=stage['scales'], states=stage['states'], n_random=stage['n_random'],
                                      seed=stage['seed'], n_displaced=0, n_perturbed=0,
                                      strains=strains)  # fmt: skip
            configurations = generate_configurations(params, **{k: self.inputs.structures[k] for k in keys})
        self.ctx.stage_configurations = configurations
        sim = stage['simulation']
        self.report(f'stage {stage["name"]}: {sim["kind"]} of {len(configurations)} configurations '
                    f'(gamma_low {sim.get("gamma_low", "default")}, gamma_up {sim.get("gamma_up", 10.0)})')  # fmt: skip
        self._extras()

    def needs_preparation(self) -> bool:
        return bool(self.ctx.stages[self.ctx.stage_index]['prepare'])

    def run_preparation(self):
        """Equilibrate or relax the stage's start cells with the current potential (ungraded: a preparation)."""
        stage = self.ctx.stages[self.ctx.stage_index]
        parameters = orm.Dict({**stage['prepare'], 'grading': False})
        then = 'straining them' if stage['strains'] else 'the stage'
        self.report(f'stage {stage["name"]}: {stage["prepare"]["kind"]} of its '
                    f'{len(self.ctx.stage_configurations)} start cells before {then}')  # fmt: skip
        metadata = {**engine_metadata(self.inputs), 'call_link_label': f'prepare_{stage["name"]}'}
        inputs = {'code': self.inputs.code, 'potential': self.ctx.potential, 'parameters': parameters,
                  'configurations': self.ctx.stage_configurations, 'metadata': metadata}  # fmt: skip
        return ToContext(preparation=self.submit(MmtpSimulateCalculation, **inputs))

    def apply_preparation(self):
        """The stage starts from the prepared cells, strained where the stage strains."""
        stage = self.ctx.stages[self.ctx.stage_index]
        node = self.ctx.preparation
        runs = node.outputs.report['runs'] if 'report' in node.outputs else []
        bad = [run for run in runs if run['stop_reason'].startswith('failed')]
        if not node.is_finished_ok or bad or 'final' not in node.outputs:
            message = bad[0]['stop_reason'] if bad else why_failed(node)
            self.ctx.failed = self.exit_codes.ERROR_PREPARATION.format(stage=stage['name'], message=message)
            return
        if stage['strains']:
            self.ctx.stage_configurations = strain_prepared(
                self.ctx.stage_configurations, node.outputs.final, orm.Dict({'strains': stage['strains']})
            )
        else:
            self.ctx.stage_configurations = node.outputs.final
        self.report(f'stage {stage["name"]}: {len(self.ctx.stage_configurations)} configurations from the prepared '
                    'cells')  # fmt: skip

    def stage_continues(self) -> bool:
        stage = self.ctx.stages[self.ctx.stage_index]
        if self.ctx.stage_done or 'failed' in self.ctx:
            return False
        if self.ctx.n_run >= self.inputs.max_iterations.value:
            return False
        if self.ctx.stage_iteration >= stage['max_iterations']:
            self.report(f'stage {stage["name"]}: still selecting after {stage["max_iterations"]} iterations')
            self.ctx.unconverged.append(stage['name'])
            return False
        return True

    def run_iteration(self):
        stage = self.ctx.stages[self.ctx.stage_index]
        self.ctx.stage_iteration += 1
        self.ctx.n_run += 1
        inputs = {
            'code': self.inputs.code,
            'potential': self.ctx.potential,
            'active_set': self.ctx.active_set,
            'training_set': self.ctx.training_set,
            'configurations': self.ctx.stage_configurations,
            'simulation': orm.Dict(stage['simulation']),
            'max_selected': self.inputs.max_selected,
            'max_jobs': self.inputs.max_jobs,
            **self._labelling(),
            'metadata': {'label': f'{stage["name"]} #{self.ctx.stage_iteration}',
                         'call_link_label': f'iteration_{len(self.ctx.iterations) + 1:03d}'},
        }  # fmt: skip
        for key in ('train_settings', 'engine_options', 'hygiene'):
            if key in self.inputs:
                inputs[key] = self.inputs[key]
        if 'test_set' in self.ctx:
            inputs['test_set'] = self.ctx.test_set
        return ToContext(iteration=self.submit(ActiveLearningIterationWorkChain, **inputs))

    def inspect_iteration(self):
        node = self.ctx.iteration
        stage = self.ctx.stages[self.ctx.stage_index]
        if node.exit_status == ActiveLearningIterationWorkChain.exit_codes.ERROR_TOO_MANY_FAILURES.status:
            self.ctx.failed = self.exit_codes.ERROR_TOO_MANY_FAILURES.format(
                what=f'stage {stage["name"]}, iteration {self.ctx.stage_iteration}', message=why_failed(node)
            )
            return
        if node.exit_status == ActiveLearningIterationWorkChain.exit_codes.ERROR_RUNS_FAILED.status:
            self.ctx.failed = self.exit_codes.ERROR_STAGE_RUNS_FAILED.format(stage=stage['name'],
                                                                             message=why_failed(node))  # fmt: skip
            return
        if not node.is_finished_ok:
            self.ctx.failed = self.exit_codes.ERROR_ITERATION.format(
                n=self.ctx.stage_iteration, stage=stage['name'], message=why_failed(node)
            )
            return
        summary = node.outputs.summary.get_dict()
        summary.pop('refused', None)
        record = {'stage': stage['name'], 'iteration': self.ctx.stage_iteration, 'uuid': node.uuid, **summary}
        previous = self.ctx.get('last_rmse') or (self.ctx.iterations[-1] if self.ctx.iterations else {})
        drift = fit_drift(previous, summary) if 'earlier_rmse_E_meV_per_atom' in summary else None
        if drift:
            record['fit_note'] = drift
            self.report(f'{stage["name"]} #{self.ctx.stage_iteration}: {drift}')
        if 'rmse_E_meV_per_atom' in summary:
            self.ctx.last_rmse = summary
        self.ctx.iterations.append(record)
        node.label = f'{stage["name"]} #{self.ctx.stage_iteration}: {summary["selected"]} selected'
        self.ctx.potential = node.outputs.potential
        self.ctx.active_set = node.outputs.active_set
        self.ctx.training_set = node.outputs.training_set
        if summary['selected'] == 0 or stage['simulation']['kind'] == 'label':  # a label stage runs once
            self.ctx.stage_done = True
            self.ctx.completed.append(stage['name'])
            self.report(f'stage {stage["name"]} done: {summary["selected"]} selected (max grade '
                        f'{summary["max_grade"]:.3g})')  # fmt: skip
        self._extras()

    def validates(self) -> bool:
        """Validation runs on a converged campaign's final potential."""
        done = 'failed' not in self.ctx and not self.ctx.unconverged and len(self.ctx.completed) == len(self.ctx.stages)
        return done and 'reference' in self.inputs

    def run_reference(self):
        from .reference import CdftReferenceWorkChain

        settings = self.inputs.reference.get_dict()
        cell = settings.pop('cell', None) or sorted(self.inputs.structures)[0]
        inputs = {'structure': self.inputs.structures[cell], 'magnetic_moments': self.inputs.magnetic_moments,
                  'settings': orm.Dict(settings), 'potential': self.ctx.potential, 'code': self.inputs.code,
                  **self._labelling(),
                  'metadata': {'call_link_label': 'reference', 'label': 'same-fidelity cDFT reference'}}  # fmt: skip
        if 'engine_options' in self.inputs:
            inputs['engine_options'] = self.inputs.engine_options
        self.report(f'validation: same-fidelity cDFT scans of structure {cell} beside the final potential')
        return ToContext(reference=self.submit(CdftReferenceWorkChain, **inputs))

    def _reference_outputs(self) -> tuple[dict, object]:
        """The validation's comparison rows for the summary (empty without one), and its exit code if it failed."""
        node = self.ctx.get('reference')
        if node is None:
            return {}, None
        if not node.is_finished_ok or 'comparison' not in node.outputs:
            self.report(f'validation failed: {why_failed(node)}')
            return {}, self.exit_codes.ERROR_REFERENCE.format(message=why_failed(node))
        self.out('reference', node.outputs.comparison)
        if 'plot' in node.outputs:
            self.out('reference_plot', node.outputs.plot)
        rows = node.outputs.comparison['comparison']
        self.report(f'validation: within tolerance on {sum(r["within"] for r in rows)} of {len(rows)} quantities')
        return {'rows': rows, 'uuid': node.uuid}, None

    def results(self):
        if 'failed' in self.ctx:
            self._extras()
            return self.ctx.failed
        self.out('potential', self.ctx.potential)
        self.out('active_set', self.ctx.active_set)
        self.out('training_set', self.ctx.training_set)
        if 'test_set' in self.ctx:
            self.out('test_set_labels', self.ctx.test_set)
        converged = len(self.ctx.completed) == len(self.ctx.stages)
        summary = {'iterations': self.ctx.iterations, 'completed_stages': self.ctx.completed,
                   'converged': converged, 'training_set_size': len(self.ctx.training_set),
                   'selected_per_iteration': [it['selected'] for it in self.ctx.iterations],
                   'warnings': self._warnings(), 'refused_before_the_stages': self.ctx.get('refused', {}),
                   'labels_refused': sum(it.get('refused_labels', 0) for it in self.ctx.iterations)
                   + sum(len(v) for v in self.ctx.get('refused', {}).values())}  # fmt: skip
        validation, failed_validation = self._reference_outputs()
        if validation:
            summary['validation'] = validation
        self.out('summary', orm.Dict(summary).store())
        self.node.base.extras.set('converged', converged)
        self._extras()
        self.report(f'{"converged" if converged else "stopped"} after {len(self.ctx.iterations)} iterations; '
                    f'{len(self.ctx.training_set)} configurations in the training set')  # fmt: skip
        if failed_validation is not None:
            return failed_validation
        if self.ctx.unconverged:
            return self.exit_codes.ERROR_STAGE_NOT_CONVERGED.format(stages=', '.join(self.ctx.unconverged))
        if not converged:
            return self.exit_codes.ERROR_ITERATION_LIMIT.format(n=self.ctx.n_run)
        return None


def cubic_lattice_parameter(structure: orm.StructureData) -> float | None:
    """The lattice parameter (A) of a cubic conventional cell (a = b = c, right angles), or None."""
    cell = np.asarray(structure.cell, dtype=float)
    lengths = np.linalg.norm(cell, axis=1)
    if np.ptp(lengths) > 1e-6 * lengths[0] or np.abs(cell @ cell.T - np.diag(lengths**2)).max() > 1e-6 * lengths[0]:
        return None
    return float(lengths[0])


def lattice_scales(recipe: dict, a: float | None, where: str) -> dict:
    """``recipe`` (an initial-set recipe or a stage) with its ``lattice_parameters`` (A, as the paper states them)
    turned into the ``scales`` of a conventional cell of lattice parameter ``a`` (A); ValueError when both are given
    or the cell is not cubic."""
    if recipe.get('lattice_parameters') is None:
        return {k: v for k, v in recipe.items() if k != 'lattice_parameters'}
    out = dict(recipe)
    values = out.pop('lattice_parameters')
    if out.get('scales') is not None:
        raise ValueError(f'{where}: give scales (ratios) or lattice_parameters (A), not both')
    if a is None:
        raise ValueError(f'{where}: lattice_parameters need a cubic conventional structure; give scales instead')
    out['scales'] = [float(x) / a for x in values]
    return out


def crn_structure(a: float = 4.15) -> orm.StructureData:
    """The 8-atom cubic B1 CrN cell (lattice parameter ``a`` in A): the default structure of the protocols."""
    from ..mtp.structures import rocksalt

    cfg = rocksalt(a)
    structure = orm.StructureData(cell=cfg.cell.tolist())
    for position, t in zip(cfg.positions, cfg.types):
        structure.append_atom(position=tuple(position), symbols=('Cr', 'N')[t])
    return structure


def build_cells(structure: orm.StructureData, cells: dict) -> dict[str, orm.StructureData]:
    """Named cells from ``structure``: ``'primitive'`` (spglib) or a supercell ``[n1, n2, n3]``."""
    import spglib

    atoms = structure.get_ase()
    out = {}
    for name, spec in cells.items():
        if spec == 'primitive':
            lattice, frac, numbers = spglib.standardize_cell(
                (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers),
                to_primitive=True, no_idealize=True, symprec=1e-3,
            )  # fmt: skip
            from ase import Atoms

            out[name] = orm.StructureData(ase=Atoms(numbers=numbers, cell=lattice, scaled_positions=frac, pbc=True))
        elif isinstance(spec, list | tuple) and len(spec) == 3:
            out[name] = orm.StructureData(ase=atoms.repeat([int(n) for n in spec]))
        else:
            raise ValueError(f'cell {name}: give "primitive" or a supercell [n1, n2, n3], got {spec!r}')
    return out


def engine_options(inputs: dict, mmtp_code: orm.AbstractCode) -> dict:
    """``metadata.options`` of the engine jobs from protocol ``inputs``: ``engine_options`` as given, with
    resources of ``engine_cores`` cores unless it names its own (null: when ``mmtp_code``'s computer runs jobs
    directly on this machine, its cores shared by the ``max_jobs`` simulation jobs that may run at once, at least
    1 each; on a scheduler 1). The job's threads follow its resources."""
    import os

    options = dict(inputs.get('engine_options') or {})
    if 'resources' not in options:
        cores = inputs.get('engine_cores')
        if cores is None:
            direct = mmtp_code.computer is not None and mmtp_code.computer.scheduler_type == 'core.direct'
            cores = max(1, (os.cpu_count() or 1) // max(1, int(inputs.get('max_jobs') or 1))) if direct else 1
        if int(cores) < 1:
            raise ValueError(f'engine_cores must be at least 1, got {cores}')
        options['resources'] = {'num_machines': 1, 'num_mpiprocs_per_machine': int(cores)}
    return options
