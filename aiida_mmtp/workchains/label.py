"""``CdftLabelWorkChain`` (entry point ``mmtp.abinit.label``): label a batch of configurations by cDFT.

The configurations come as a :class:`TrainingSetData` (cells, positions,
species and target moments; labels in it are ignored). Each one runs in a
:class:`CdftBaseWorkChain`, at most ``max_concurrent`` at a time. A failed
run is recorded (``failures``) and the batch goes on; the labelled set
(``training_set``) links to the output of every run it came from and names
each run's calculation in its ``sources`` attribute. If more than
``max_failure_fraction`` of the runs fail, the work chain still returns what
was labelled, then exits with ``ERROR_TOO_MANY_FAILURES``.
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import WorkChain, calcfunction, while_

from ..calculations.cdft import check_run, fidelity_key
from ..data.training_set import TrainingSetData
from ..mtp.configuration import Configuration
from ..mtp.kpoints import kpoint_set_difference
from .cdft_base import CdftBaseWorkChain

__all__ = [
    'CdftLabelWorkChain',
    'collect_labels',
    'configuration_problem',
    'kpoint_problem',
    'kpoint_sampling',
    'split_configurations',
]


def _label(index: int) -> str:
    return f'c{index:05d}'


@calcfunction
def split_configurations(configurations: TrainingSetData) -> dict:
    """Per configuration, a ``StructureData`` (``structure_cNNNNN``) and its target moments (``moments_cNNNNN``)."""
    out = {}
    species = configurations.species
    for k, cfg in enumerate(configurations.get_configurations()):
        structure = orm.StructureData(cell=cfg.cell)
        for position, t in zip(cfg.positions, cfg.types):
            structure.append_atom(position=tuple(position), symbols=species[t])
        moments = orm.ArrayData()
        moments.set_array('moments', np.asarray(cfg.moments, dtype=float))
        out[f'structure_{_label(k)}'] = structure
        out[f'moments_{_label(k)}'] = moments
    return out


@calcfunction
def collect_labels(configurations: TrainingSetData, fidelity: orm.Dict, **runs) -> TrainingSetData:
    """The labelled configurations, in input order: ``runs`` holds ``arrays_cNNNNN``, ``parameters_cNNNNN`` and
    ``kpoints_cNNNNN`` (the mesh each run used).

    Energies in eV, forces eV/A, virial eV (= -stress * volume), moments mu_B (achieved), magnetic forces eV/mu_B.
    The ABINIT version of the runs and the first label's k-point sampling (``kpoints.reference``) complete the
    fidelity key; every label must sample the same k-point set (TrainingSetData refuses it otherwise).
    """
    configs = configurations.get_configurations()
    key = fidelity.get_dict()
    shifts = key.get('kpoints', {}).get('shifts', [[0.0, 0.0, 0.0]])
    labelled, sources, versions, kpoints = [], [], set(), []
    for k, cfg in enumerate(configs):
        arrays = runs.get(f'arrays_{_label(k)}')
        if arrays is None:
            continue
        scalars = runs[f'parameters_{_label(k)}']
        volume = abs(float(np.linalg.det(cfg.cell)))
        labelled.append(
            Configuration(
                positions=cfg.positions,
                types=cfg.types,
                cell=cfg.cell,
                moments=arrays.get_array('moments'),
                energy=float(scalars['energy']),
                forces=arrays.get_array('forces'),
                virial=-arrays.get_array('stress') * volume,
                mag_forces=arrays.get_array('mag_forces'),
            )
        )
        sources.append(arrays.creator.uuid if arrays.creator is not None else '')
        versions.add(scalars.get('abinit_version') or 'unknown')
        mesh = runs.get(f'kpoints_{_label(k)}')
        kpoints.append(None if mesh is None else ([int(n) for n in mesh.get_kpoints_mesh()[0]], shifts))
    key['code'] = 'ABINIT ' + ', '.join(sorted(versions))
    first = next((k for k, kp in enumerate(kpoints) if kp is not None), None)
    if first is not None and 'kpoints' in key:
        mesh, shifts = kpoints[first]
        key['kpoints']['reference'] = {'cell': labelled[first].cell.tolist(), 'mesh': mesh, 'shifts': shifts}
    return TrainingSetData(labelled, configurations.species, fidelity=key, sources=sources, kpoints=kpoints)


def kpoint_sampling(cdft_inputs) -> tuple[dict, list[list[float]]]:
    """How the meshes are chosen (``{'distance': ...}`` or ``{'mesh': ...}``) and the shifts, from the inputs of the
    ``cdft`` namespace (a CdftBaseWorkChain's)."""
    params = cdft_inputs['abinit']['parameters'].get_dict()
    if 'kpoints_distance' in cdft_inputs:
        rule = {'distance': cdft_inputs['kpoints_distance'].value}
        parity = cdft_inputs.get('kpoints_force_parity')
        rule['force_parity'] = bool(parity.value) if parity is not None else False
        offset = [0.0, 0.0, 0.0]
    else:
        mesh, offset = cdft_inputs['kpoints'].get_kpoints_mesh()
        rule = {'mesh': [int(n) for n in mesh]}
    shifts = params.get('shiftk') or [list(offset)]
    return rule, [[float(x) for x in s] for s in shifts]


def mesh_of(cell, rule: dict) -> list[int]:
    """The mesh a CdftBaseWorkChain uses for ``cell`` (rows, A) under ``rule`` (see :func:`kpoint_sampling`)."""
    if 'mesh' in rule:
        return list(rule['mesh'])
    kpoints = orm.KpointsData()
    kpoints.set_cell(np.asarray(cell, dtype=float).tolist())
    kpoints.set_kpoints_mesh_from_density(rule['distance'], force_parity=rule.get('force_parity', False))
    return [int(n) for n in kpoints.get_kpoints_mesh()[0]]


def kpoint_problem(cells: list, cdft_inputs, names: list[str] | None = None) -> str | None:
    """Why ``cells`` ((3, 3) rows, A) would not all be labelled on the k-point set of the first, or None.

    ``names`` say what each cell is in the message (default: ``configuration k``)."""
    rule, shifts = kpoint_sampling(cdft_inputs)
    names = names or [f'configuration {k + 1}' for k in range(len(cells))]
    if not cells:
        return None
    first = mesh_of(cells[0], rule)
    for name, cell in zip(names, cells):
        why = kpoint_set_difference(cells[0], first, shifts, cell, mesh_of(cell, rule), shifts)
        if why:
            return (
                f'{name} would be labelled on another k-point set than {names[0]}: {why}; one training set '
                'needs one k-point set (use cells that are supercells of one another, with matching meshes)'
            )
    return None


def configuration_problem(cfg: Configuration, species: list[str], params: dict, pseudos: dict) -> str | None:
    """What a CdftCalculation would refuse in ``cfg`` (types index ``species``), or None."""
    return check_run([species[t] for t in cfg.types], cfg.cell, cfg.positions, cfg.moments, params, pseudos)


def validate_inputs(value, ctx) -> str | None:
    """Every configuration is checked as a CdftCalculation would check it, before anything runs."""
    if 'configurations' not in value or 'cdft' not in value:
        return None
    configurations = value['configurations']
    abinit = value['cdft'].get('abinit', {})
    if 'parameters' not in abinit:
        return None
    if value.get('max_concurrent') is not None and value['max_concurrent'].value < 1:
        return 'max_concurrent must be at least 1'
    fraction = value.get('max_failure_fraction')
    if fraction is not None and not 0 <= fraction.value <= 1:
        return f'max_failure_fraction must lie in [0, 1], got {fraction.value}'
    species = configurations.species
    params = abinit['parameters'].get_dict()
    pseudos = abinit.get('pseudos', {})
    configs = configurations.get_configurations()
    for k, cfg in enumerate(configs):
        if cfg.moments is None:
            return f'configuration {k + 1} has no target moments'
        problem = configuration_problem(cfg, species, params, pseudos)
        if problem:
            return f'configuration {k + 1}: {problem}'
    if 'kpoints_distance' in value['cdft'] or 'kpoints' in value['cdft']:
        return kpoint_problem([cfg.cell for cfg in configs], value['cdft'])
    return None


class CdftLabelWorkChain(WorkChain):
    """Label a batch of configurations by constrained DFT, a few runs at a time, recording failures."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.expose_inputs(CdftBaseWorkChain, namespace='cdft', exclude=('abinit.structure', 'abinit.moments'))
        spec.input(
            'configurations',
            valid_type=TrainingSetData,
            help='Cells, positions, species and signed target moments (mu_B) to label; labels in it are ignored.',
        )
        spec.input('max_concurrent', valid_type=orm.Int, default=lambda: orm.Int(4), help='Runs at a time.')
        spec.input(
            'max_failure_fraction',
            valid_type=orm.Float,
            default=lambda: orm.Float(0.25),
            help='Fraction of failed runs tolerated before the work chain reports failure.',
        )
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            while_(cls.has_pending)(cls.submit_batch, cls.inspect_batch),
            cls.collect,
        )
        spec.output('training_set', valid_type=TrainingSetData, required=False, help='The labelled configurations.')
        spec.output('failures', valid_type=orm.Dict, help='Per failed configuration: index, run, exit status, message.')
        spec.exit_code(
            400, 'ERROR_TOO_MANY_FAILURES', message='{failed} of {total} runs failed (tolerated: {allowed}).'
        )
        spec.exit_code(401, 'ERROR_NO_LABELS', message='No configuration could be labelled.')

    def setup(self):
        n = len(self.inputs.configurations)
        self.ctx.parts = split_configurations(self.inputs.configurations)
        self.ctx.pending = list(range(n))
        self.ctx.done = {}
        self.ctx.failures = []
        self.report(f'labelling {n} configurations by cDFT, at most {self.inputs.max_concurrent.value} at a time')

    def has_pending(self) -> bool:
        return bool(self.ctx.pending)

    def submit_batch(self):
        """Submit the next ``max_concurrent`` runs."""
        batch, self.ctx.pending = (
            self.ctx.pending[: self.inputs.max_concurrent.value],
            self.ctx.pending[self.inputs.max_concurrent.value :],
        )
        for k in batch:
            inputs = AttributeDict(self.exposed_inputs(CdftBaseWorkChain, 'cdft'))
            inputs.abinit = AttributeDict(inputs.abinit)
            inputs.abinit.structure = self.ctx.parts[f'structure_{_label(k)}']
            inputs.abinit.moments = self.ctx.parts[f'moments_{_label(k)}']
            inputs.metadata = {'call_link_label': f'label_{_label(k)}'}
            node = self.submit(CdftBaseWorkChain, **inputs)
            self.to_context(**{f'run_{_label(k)}': node})
        self.ctx.batch = batch
        self.report(f'submitted configurations {", ".join(str(k + 1) for k in batch)}')

    def inspect_batch(self):
        """Keep the labels of the runs that finished well; record the others."""
        for k in self.ctx.batch:
            node = self.ctx[f'run_{_label(k)}']
            if node.is_finished_ok and 'output_arrays' in node.outputs:
                self.ctx.done[k] = node
            else:
                failure = {'index': k, 'run': node.uuid, 'pk': node.pk, 'exit_status': node.exit_status,
                           'message': node.exit_message or node.process_state.value}  # fmt: skip
                self.ctx.failures.append(failure)
                self.report(f'configuration {k + 1} failed: {node.process_label}<{node.pk}> {failure["message"]}')

    def collect(self):
        total = len(self.inputs.configurations)
        failed = len(self.ctx.failures)
        self.out('failures', orm.Dict({'failed': self.ctx.failures, 'n_failed': failed, 'n_total': total}).store())
        if not self.ctx.done:
            return self.exit_codes.ERROR_NO_LABELS
        inputs = self.inputs.cdft
        params = inputs.abinit.parameters.get_dict()
        rule, shifts = kpoint_sampling(inputs)
        fidelity = orm.Dict(fidelity_key(params, dict(inputs.abinit.pseudos), {**rule, 'shifts': shifts}, None))
        runs = {}
        for k, node in sorted(self.ctx.done.items()):
            runs[f'arrays_{_label(k)}'] = node.outputs.output_arrays
            runs[f'parameters_{_label(k)}'] = node.outputs.output_parameters
            runs[f'kpoints_{_label(k)}'] = node.outputs.kpoints if 'kpoints' in node.outputs else inputs.kpoints
        training_set = collect_labels(self.inputs.configurations, fidelity, **runs)
        self.out('training_set', training_set)
        self.report(f'labelled {len(training_set)} of {total} configurations; {failed} failed')
        allowed = self.inputs.max_failure_fraction.value
        if failed > allowed * total:
            return self.exit_codes.ERROR_TOO_MANY_FAILURES.format(failed=failed, total=total, allowed=f'{allowed:.0%}')
        return None
