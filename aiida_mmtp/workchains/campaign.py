"""``CampaignWorkChain`` (entry point ``mmtp.campaign``): the paper's active-learning protocol end to end.

1. Initial training set (:class:`InitialSetWorkChain`: lattice scales x
   {FM, AFM, random 50/50 states}, random displacements, moment perturbations,
   seeded and recorded), labelled by cDFT.
2. Fit and active set (:class:`FitWorkChain`).
3. Stages, each a simulation kind on its own starting configurations (moment
   equilibration of the initial set, relaxation of ideal cells, MD at given
   temperatures and lattice scales): active-learning iterations
   (:class:`ActiveLearningIterationWorkChain`) until one selects nothing.

``restart_from`` (the UUID or pk of an earlier campaign) continues it: every
label it made is reused (never recomputed), the stages it completed are
skipped, and the fit starts from its last potential. ``max_iterations`` caps
the iterations of one run; a campaign stopped by it returns what it has and
exits 401, to be continued with ``restart_from``.

Progress: each iteration's node gets a label (``stage #n: k selected``) and
extras (candidates, selected, failed, max grade, RMSEs); the campaign's extras
hold ``iterations`` (one summary per iteration), ``completed_stages`` and
``converged``, so ``verdi process list`` and a QueryBuilder show where it is.
"""

from __future__ import annotations

from aiida import orm
from aiida.engine import ToContext, WorkChain, if_, while_

from ..calculations.functions import merge_training_sets
from ..data.active_set import ActiveSetData
from ..data.potential import MtpPotentialData
from ..data.training_set import TrainingSetData
from ..mtp.structures import min_distance, scaled
from .common import engine_metadata, why_failed
from .fit import FitWorkChain
from .functions import (
    GENERATION,
    configurations,
    generate_configurations,
    generation_settings,
    structure_to_configuration,
)
from .initial import InitialSetWorkChain
from .iteration import ActiveLearningIterationWorkChain
from .label import CdftLabelWorkChain, configuration_problem

__all__ = ['STAGE', 'CampaignWorkChain']

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
    'strains': [],  # [[component, magnitude], ...]: strained copies of the start configurations (Voigt)
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
    names = [st['name'] for st in stages]
    if None in names or len(set(names)) < len(names):
        return f'every stage needs a unique name, got {names}'
    for st in stages:
        unknown = sorted(set(st) - set(STAGE))
        if unknown:
            return f'stage {st["name"]}: unknown keys {", ".join(unknown)} (known: {", ".join(STAGE)})'
        sim = st['simulation'] or {}
        if sim.get('kind') not in ('equilibrate', 'relax', 'md', 'label'):
            return f'stage {st["name"]}: simulation.kind must be equilibrate, relax, md or label'
        if st['strains'] and st['start'] != 'ideal':
            return f'stage {st["name"]}: strains apply to ideal cells (start: ideal)'
        low, up = sim.get('gamma_low', 2.0), sim.get('gamma_up', 10.0)
        if low > up:
            return f'stage {st["name"]}: gamma_low ({low}) must not exceed gamma_up ({up})'
        if st['start'] not in ('initial', 'ideal'):
            return f'stage {st["name"]}: start must be "initial" or "ideal", got {st["start"]!r}'
        missing = sorted(set(st['structures'] or []) - set(cells))
        if missing:
            return f'stage {st["name"]}: no structure called {", ".join(missing)}'
    if 'label' in value and 'restart_from' not in value:
        abinit = value['label']['cdft']['abinit']
        params, pseudos = abinit['parameters'].get_dict(), dict(abinit.get('pseudos', {}))
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
    if value.get('max_selected') is not None and value['max_selected'].value < 1:
        return 'max_selected must be at least 1'
    return None


def previous_campaign(identifier: str) -> orm.WorkflowNode:
    """The campaign node named by UUID or pk; ValueError if it is not a campaign."""
    try:
        node = orm.load_node(int(identifier)) if identifier.isdigit() else orm.load_node(identifier)
    except Exception as exc:  # NotExistent, MultipleObjectsError
        raise ValueError(f'restart_from: no node {identifier}: {exc}') from exc
    if node.process_type is None or not node.process_type.endswith('mmtp.campaign'):
        raise ValueError(f'restart_from: {node.__class__.__name__}<{node.pk}> is not a campaign')
    return node


def labels_of(campaign: orm.WorkflowNode) -> list[TrainingSetData]:
    """Every labelled set (output of ``collect_labels``) made under ``campaign`` and the campaigns it continued."""
    sets = []
    for node in campaign.called_descendants:
        if isinstance(node, orm.CalcFunctionNode) and node.process_label == 'collect_labels' and node.is_finished_ok:
            sets.append(node.outputs.result)
    if 'restart_from' in campaign.inputs:
        sets += labels_of(previous_campaign(str(campaign.inputs.restart_from.value)))
    return sorted(sets, key=lambda s: s.ctime)


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
        spec.expose_inputs(CdftLabelWorkChain, namespace='label', exclude=('configurations',))
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            if_(cls.needs_initial_labels)(cls.label_initial),
            cls.fit_initial,
            while_(cls.next_stage)(
                cls.prepare_stage,
                while_(cls.stage_continues)(cls.run_iteration, cls.inspect_iteration),
            ),
            cls.results,
        )  # fmt: skip
        spec.output('potential', valid_type=MtpPotentialData, help='The final potential.')
        spec.output('active_set', valid_type=ActiveSetData, help='Its active set.')
        spec.output('training_set', valid_type=TrainingSetData, help='Every label, each linked to its cDFT run.')
        spec.output('summary', valid_type=orm.Dict, help='Per iteration: stage, candidates, selected, RMSEs.')
        spec.exit_code(300, 'ERROR_RESTART', message='Cannot continue from {identifier}: {message}')
        spec.exit_code(310, 'ERROR_INITIAL_LABELS', message='The initial set could not be labelled: {message}')
        spec.exit_code(320, 'ERROR_FIT', message='The fit failed: {message}')
        spec.exit_code(330, 'ERROR_ITERATION', message='Iteration {n} of stage {stage} failed: {message}')
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
        abinit_code: orm.AbstractCode,
        mmtp_code: orm.AbstractCode,
        structure: orm.StructureData | None = None,
        protocol: str | None = None,
        overrides: dict | None = None,
        options: dict | None = None,
    ):
        """A ready builder for ``protocol`` (``fast``, ``balanced``, ``paper``; see protocols/campaign.yaml).

        ``structure``: the conventional cell (default: 8-atom B1 CrN, a = 4.15 A); ``overrides``: any protocol
        key (e.g. ``{'cdft': {'parameters': {'ecut': 30}}, 'max_selected': 10}``); ``options``: metadata options
        of the ABINIT jobs (resources, walltime, queue), merged over the protocol's.
        """
        from ..mtp.potential import Potential
        from ..protocols import get_protocol_inputs

        inputs = get_protocol_inputs('campaign', protocol, overrides)
        structure = structure if structure is not None else crn_structure()
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
        cdft = inputs['cdft']
        family = orm.load_group(cdft['pseudo_family'])
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
        builder.label.max_concurrent = orm.Int(cdft['max_concurrent'])
        builder.label.max_failure_fraction = orm.Float(cdft['max_failure_fraction'])
        builder.label.cdft.kpoints_distance = orm.Float(cdft['kpoints_distance'])
        builder.label.cdft.max_iterations = orm.Int(1 + int(cdft['max_restarts']))
        abinit = builder.label.cdft.abinit
        abinit.code = abinit_code
        abinit.parameters = orm.Dict({'constrained': species, **cdft['parameters']})
        abinit.pseudos = family.get_pseudos(elements=species)
        resources = {'num_machines': 1, 'num_mpiprocs_per_machine': 1}
        abinit.metadata.options = {'resources': resources, **cdft.get('options', {}), **(options or {})}
        builder.metadata.label = f'{"".join(species)} {protocol or "default"} campaign'
        builder.metadata.description = f'Active-learning campaign, protocol {protocol or "default"}'
        return builder

    # ------------------------------------------------------------------ helpers
    def _species(self) -> list[str]:
        return self.inputs.potential.species

    def _generation(self, **overrides) -> orm.Dict:
        species = self._species()
        moments, _ = _magnetic(self.inputs, species)
        base = self.inputs.initial.get_dict() if 'initial' in self.inputs else {}
        return orm.Dict({**base, 'species': species, 'moments': moments, **overrides})

    def _extras(self) -> None:
        self.node.base.extras.set_many({'iterations': self.ctx.iterations, 'completed_stages': self.ctx.completed,
                                        'stage': self.ctx.get('stage_name'), 'n_training': len(self.ctx.training_set)
                                        if 'training_set' in self.ctx else 0})  # fmt: skip

    # ------------------------------------------------------------------ steps
    def setup(self):
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
            sets = labels_of(previous)
            if not sets:
                return self.exit_codes.ERROR_RESTART.format(identifier=identifier, message='it labelled nothing')
            self.ctx.training_set = merge_training_sets(**{f'set_{k:04d}': s for k, s in enumerate(sets)})
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

    def needs_initial_labels(self) -> bool:
        return 'training_set' not in self.ctx

    def label_initial(self):
        inputs = {'structures': self.inputs.structures, 'parameters': self._generation(),
                  'label': self.exposed_inputs(CdftLabelWorkChain, 'label'),
                  'metadata': {'call_link_label': 'initial_set', 'label': 'initial set'}}  # fmt: skip
        self.report('generating and labelling the initial set')
        return ToContext(initial_set=self.submit(InitialSetWorkChain, **inputs))

    def fit_initial(self):
        if 'initial_set' in self.ctx:
            node = self.ctx.initial_set
            if 'training_set' not in node.outputs:
                return self.exit_codes.ERROR_INITIAL_LABELS.format(message=why_failed(node))
            self.ctx.initial = node.outputs.configurations
            self.ctx.training_set = node.outputs.training_set
        train = {'code': self.inputs.code, 'potential': self.ctx.start_potential,
                 'training_set': self.ctx.training_set, 'metadata': engine_metadata(self.inputs)}  # fmt: skip
        if 'train_settings' in self.inputs:
            train['settings'] = self.inputs.train_settings
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
            params = self._generation(scales=stage['scales'], states=stage['states'], n_random=stage['n_random'],
                                      seed=stage['seed'], n_displaced=0, n_perturbed=0,
                                      strains=stage['strains'])  # fmt: skip
            configurations = generate_configurations(params, **{k: self.inputs.structures[k] for k in keys})
        self.ctx.stage_configurations = configurations
        sim = stage['simulation']
        self.report(f'stage {stage["name"]}: {sim["kind"]} of {len(configurations)} configurations '
                    f'(gamma_low {sim.get("gamma_low", "default")}, gamma_up {sim.get("gamma_up", 10.0)})')  # fmt: skip
        self._extras()

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
            'label': self.exposed_inputs(CdftLabelWorkChain, 'label'),
            'metadata': {'label': f'{stage["name"]} #{self.ctx.stage_iteration}',
                         'call_link_label': f'iteration_{len(self.ctx.iterations) + 1:03d}'},
        }  # fmt: skip
        for key in ('train_settings', 'engine_options'):
            if key in self.inputs:
                inputs[key] = self.inputs[key]
        return ToContext(iteration=self.submit(ActiveLearningIterationWorkChain, **inputs))

    def inspect_iteration(self):
        node = self.ctx.iteration
        stage = self.ctx.stages[self.ctx.stage_index]
        if not node.is_finished_ok:
            self.ctx.failed = self.exit_codes.ERROR_ITERATION.format(
                n=self.ctx.stage_iteration, stage=stage['name'], message=why_failed(node)
            )
            return
        summary = node.outputs.summary.get_dict()
        summary.pop('refused', None)
        record = {'stage': stage['name'], 'iteration': self.ctx.stage_iteration, 'uuid': node.uuid, **summary}
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

    def results(self):
        if 'failed' in self.ctx:
            self._extras()
            return self.ctx.failed
        self.out('potential', self.ctx.potential)
        self.out('active_set', self.ctx.active_set)
        self.out('training_set', self.ctx.training_set)
        converged = len(self.ctx.completed) == len(self.ctx.stages)
        summary = {'iterations': self.ctx.iterations, 'completed_stages': self.ctx.completed,
                   'converged': converged, 'training_set_size': len(self.ctx.training_set),
                   'selected_per_iteration': [it['selected'] for it in self.ctx.iterations]}  # fmt: skip
        self.out('summary', orm.Dict(summary).store())
        self.node.base.extras.set('converged', converged)
        self._extras()
        self.report(f'{"converged" if converged else "stopped"} after {len(self.ctx.iterations)} iterations; '
                    f'{len(self.ctx.training_set)} configurations in the training set')  # fmt: skip
        if self.ctx.unconverged:
            return self.exit_codes.ERROR_STAGE_NOT_CONVERGED.format(stages=', '.join(self.ctx.unconverged))
        if not converged:
            return self.exit_codes.ERROR_ITERATION_LIMIT.format(n=self.ctx.n_run)
        return None


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
