"""``CdftLabelWorkChain`` (entry point ``mmtp.abinit.label``): label a batch of configurations by cDFT.

The configurations come as a :class:`TrainingSetData` (cells, positions,
species and target moments; labels in it are ignored). Each one runs in a
:class:`CdftBaseWorkChain`, at most ``max_concurrent`` at a time, in a rolling
window: the next run starts as soon as any run ends, so one slow run never
holds the others. A failed
run is recorded (``failures``) and the batch goes on; the labelled set
(``training_set``) links to the output of every run it came from and names
each run's calculation in its ``sources`` attribute. If more than
``max_failure_fraction`` of the runs fail, the work chain still returns what
was labelled, then exits with ``ERROR_TOO_MANY_FAILURES``.

``reuse`` lists earlier runs (UUIDs of :class:`CdftBaseWorkChain` nodes, e.g.
every run of an interrupted campaign): a configuration that one of them
labelled, finished and successful, at the same fidelity, is not run again;
that run's outputs are collected as if it had been submitted here. The match
is by configuration (species, cell and positions to 1e-6 A, target moments to
1e-4 mu_B) and fidelity (ABINIT parameters, pseudopotential MD5s, k-point rule
and shifts).
"""

from __future__ import annotations

import json

import numpy as np
from aiida import orm
from aiida.common import AttributeDict
from aiida.common.links import LinkType
from aiida.engine import ProcessState, ToContext, WorkChain, calcfunction, while_

from ..calculations.cdft import check_run, fidelity_key
from ..data.training_set import TrainingSetData
from ..mtp.configuration import Configuration
from ..mtp.kpoints import kpoint_set_difference
from .cdft_base import CdftBaseWorkChain
from .common import abandoned_by

__all__ = [
    'CdftLabelWorkChain',
    'collect_labels',
    'configuration_problem',
    'interrupted_labels',
    'kpoint_problem',
    'kpoint_sampling',
    'labels_from_runs',
    'reusable_runs',
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
    fidelity key; every label must sample the same k-point set (TrainingSetData refuses it otherwise). Where the
    configurations carry ``origins`` (what each one is), the labelled set keeps those of its labels.
    """
    configs = configurations.get_configurations()
    key = fidelity.get_dict()
    shifts = key.get('kpoints', {}).get('shifts', [[0.0, 0.0, 0.0]])
    labelled, sources, versions, kpoints, kept = [], [], set(), [], []
    for k, cfg in enumerate(configs):
        arrays = runs.get(f'arrays_{_label(k)}')
        if arrays is None:
            continue
        kept.append(k)
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
    origins = configurations.origins
    return TrainingSetData(labelled, configurations.species, fidelity=key, sources=sources, kpoints=kpoints,
                           origins=None if origins is None else [origins[k] for k in kept])  # fmt: skip


def _labelled(run: orm.ProcessNode) -> bool:
    """Whether a CdftBaseWorkChain finished well and gave labels (the runs a batch collects)."""
    return run.is_finished_ok and 'output_arrays' in run.outputs


def labels_from_runs(configurations: TrainingSetData, cdft, done: dict) -> TrainingSetData:
    """The labelled set of ``configurations`` from finished runs (``done``: index -> CdftBaseWorkChain node), made by
    :func:`collect_labels` (provenance: every label links to its run's outputs); ``cdft`` holds the inputs of the
    batch's CdftBaseWorkChains (the fidelity)."""
    params = cdft['abinit']['parameters'].get_dict()
    rule, shifts = kpoint_sampling(cdft)
    pseudos = dict(cdft['abinit'].get('pseudos', {}))
    fidelity = orm.Dict(fidelity_key(params, pseudos, {**rule, 'shifts': shifts}, None))
    runs = {}
    for k, node in sorted(done.items()):
        runs[f'arrays_{_label(k)}'] = node.outputs.output_arrays
        runs[f'parameters_{_label(k)}'] = node.outputs.output_parameters
        runs[f'kpoints_{_label(k)}'] = node.outputs.kpoints if 'kpoints' in node.outputs else cdft.get('kpoints')
    return collect_labels(configurations, fidelity, **{key: value for key, value in runs.items() if value is not None})


def interrupted_labels(node: orm.WorkflowNode) -> TrainingSetData | None:
    """The labels of the runs that finished well under a CdftLabelWorkChain ``node`` that never collected them
    (killed, excepted, daemon lost), or None when there are none."""
    if 'training_set' in node.outputs:
        return None
    done = {}
    for link in node.base.links.get_outgoing(link_type=LinkType.CALL_WORK).all():
        run = link.node
        if link.link_label.startswith('label_c') and _labelled(run):
            done[int(link.link_label[len('label_c') :])] = run
    if not done:
        return None
    inputs = node.base.links.get_incoming(link_type=LinkType.INPUT_WORK).nested()
    return labels_from_runs(inputs['configurations'], inputs['cdft'], done)


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


def _configuration_key(structure: orm.StructureData, moments: orm.ArrayData) -> str:
    """What makes two cDFT runs label the same configuration: species, cell, positions (A) and target moments."""
    positions = np.array([site.position for site in structure.sites], dtype=float)
    return json.dumps([
        [site.kind_name for site in structure.sites],
        np.round(np.asarray(structure.cell, dtype=float), 6).tolist(),
        np.round(positions, 6).tolist(),
        np.round(moments.get_array('moments'), 4).tolist(),
    ])  # fmt: skip


def _fidelity_fingerprint(cdft) -> str:
    """What makes two cDFT runs one fidelity, from the inputs of a CdftBaseWorkChain (a mapping or a node's
    nested inputs): ABINIT parameters, pseudopotentials (MD5) and k-point rule and shifts."""
    pseudos = {element: pseudo.md5 for element, pseudo in dict(cdft['abinit'].get('pseudos', {})).items()}
    rule, shifts = kpoint_sampling(cdft)
    return json.dumps([cdft['abinit']['parameters'].get_dict(), pseudos, rule, shifts], sort_keys=True)


def reusable_runs(uuids: list[str], cdft) -> dict[str, orm.WorkflowNode]:
    """The runs among ``uuids`` (CdftBaseWorkChain nodes) that finished with labels at the fidelity of ``cdft``
    (the inputs of this batch's CdftBaseWorkChains), by configuration key."""
    wanted = _fidelity_fingerprint(cdft)
    found = {}
    for uuid in uuids:
        node = orm.load_node(uuid)
        if not _labelled(node):
            continue
        inputs = node.base.links.get_incoming(link_type=LinkType.INPUT_WORK).nested()
        if _fidelity_fingerprint(inputs) != wanted:
            continue
        found.setdefault(_configuration_key(inputs['abinit']['structure'], inputs['abinit']['moments']), node)
    return found


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
        spec.input('reuse', valid_type=orm.List, required=False,
                   help='UUIDs of earlier CdftBaseWorkChain runs: a configuration one of them labelled at this '
                   'fidelity is taken from it, not run again.')  # fmt: skip
        spec.input(
            'max_failure_fraction',
            valid_type=orm.Float,
            default=lambda: orm.Float(0.25),
            help='Fraction of failed runs tolerated before the work chain reports failure.',
        )
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            while_(cls.has_work)(cls.fill_window, cls.inspect_finished),
            cls.collect,
        )
        spec.output('training_set', valid_type=TrainingSetData, required=False, help='The labelled configurations.')
        spec.output('failures', valid_type=orm.Dict, help='Per failed configuration: index, run, exit status, message.')
        spec.exit_code(
            400, 'ERROR_TOO_MANY_FAILURES', message='{failed} of {total} runs failed (tolerated: {allowed}).'
        )
        spec.exit_code(401, 'ERROR_NO_LABELS', message='No configuration could be labelled.')
        spec.exit_code(402, 'ERROR_ABANDONED', message='Stopped: {message}.')

    def setup(self):
        n = len(self.inputs.configurations)
        self.ctx.parts = split_configurations(self.inputs.configurations)
        self.ctx.pending = list(range(n))
        self.ctx.in_flight = {}  # str(index) -> pk of its CdftBaseWorkChain
        self.ctx.done = {}
        self.ctx.failures = []
        if 'reuse' in self.inputs:
            earlier = reusable_runs(self.inputs.reuse.get_list(), self.inputs.cdft)
            for k in range(n):
                key = _configuration_key(self.ctx.parts[f'structure_{_label(k)}'],
                                         self.ctx.parts[f'moments_{_label(k)}'])  # fmt: skip
                if key in earlier:
                    self.ctx.done[k] = earlier[key]
            self.ctx.pending = [k for k in self.ctx.pending if k not in self.ctx.done]
            if self.ctx.done:
                self.report(f'{len(self.ctx.done)} configurations were labelled by earlier runs (reused): '
                            + ', '.join(f'{k + 1} <- {node.process_label}<{node.pk}>'
                                        for k, node in sorted(self.ctx.done.items())))  # fmt: skip
        self.report(f'labelling {len(self.ctx.pending)} configurations by cDFT, at most '
                    f'{self.inputs.max_concurrent.value} at a time')  # fmt: skip

    def has_work(self) -> bool:
        return bool(self.ctx.pending or self.ctx.in_flight)

    def fill_window(self):
        """Submit runs until ``max_concurrent`` are in flight (none when a process above this one was killed
        meanwhile), then wait for the first of them to end."""
        why = abandoned_by(self.node)
        if why:
            self.report(f'not submitting: {why}')
            return self.exit_codes.ERROR_ABANDONED.format(message=why)
        submitted = []
        while self.ctx.pending and len(self.ctx.in_flight) < self.inputs.max_concurrent.value:
            k = self.ctx.pending.pop(0)
            inputs = AttributeDict(self.exposed_inputs(CdftBaseWorkChain, 'cdft'))
            inputs.abinit = AttributeDict(inputs.abinit)
            inputs.abinit.structure = self.ctx.parts[f'structure_{_label(k)}']
            inputs.abinit.moments = self.ctx.parts[f'moments_{_label(k)}']
            inputs.metadata = {'call_link_label': f'label_{_label(k)}'}
            self.ctx.in_flight[str(k)] = self.submit(CdftBaseWorkChain, **inputs).pk
            submitted.append(k)
        if submitted:
            self.report(f'submitted configurations {", ".join(str(k + 1) for k in submitted)} '
                        f'({len(self.ctx.in_flight)} in flight)')  # fmt: skip
        # a rolling wait: _on_awaitable_finished resumes at the first run that ends
        return ToContext(**{f'run_{_label(int(k))}': orm.load_node(pk) for k, pk in self.ctx.in_flight.items()})

    def _on_awaitable_finished(self, awaitable) -> None:
        """Resume at the first awaited run that ends, not at the last (AiiDA's to_context waits for all).

        The step that follows collects every run that has ended and awaits the others anew, so a callback of a
        wait that is over (its run awaited again, or already collected) is ignored."""
        if not any(pending is awaitable for pending in self._awaitables):  # by identity: awaitables compare as dicts
            return
        super()._on_awaitable_finished(awaitable)
        if self._awaitables and self.state == ProcessState.WAITING:  # the only waits here are fill_window's
            self.resume()

    def inspect_finished(self):
        """Keep the labels of the runs that ended well; record the others; the rest stay in flight."""
        for key, pk in list(self.ctx.in_flight.items()):
            node = orm.load_node(pk)
            if not node.is_terminated:
                continue
            k = int(key)
            del self.ctx.in_flight[key]
            if _labelled(node):
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
        training_set = labels_from_runs(self.inputs.configurations, self.inputs.cdft, self.ctx.done)
        self.out('training_set', training_set)
        self.report(f'labelled {len(training_set)} of {total} configurations; {failed} failed')
        allowed = self.inputs.max_failure_fraction.value
        if failed > allowed * total:
            return self.exit_codes.ERROR_TOO_MANY_FAILURES.format(failed=failed, total=total, allowed=f'{allowed:.0%}')
        return None
