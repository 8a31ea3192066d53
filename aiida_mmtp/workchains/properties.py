"""``PropertiesWorkChain`` (entry point ``mmtp.properties``): the paper's property set of a potential.

For each magnetic state (FM, AFM, PM) and each property (state average and
its convergence, elastic constants, phonons, quasi-harmonic thermal
properties) one :class:`~aiida_mmtp.calculations.properties.MmtpPropertiesCalculation`
runs the engine; all run at the same time. A calcfunction then gathers the
numbers into one ``summary`` and writes the elastic constants beside the
paper's Table II (``table_ii``, CSV). Every result and plot sits downstream
of the potential in the provenance graph; the potential's extras list the
work chains that computed its properties.
"""

from __future__ import annotations

import csv
import io

from aiida import orm
from aiida.engine import WorkChain, calcfunction

from ..calculations.properties import MmtpPropertiesCalculation, validate_properties
from ..data.potential import MtpPotentialData
from ..mtp.properties.run import KINDS
from ..mtp.properties.states import PM_SAMPLING_KEYS, STATE_KINDS
from .common import engine_metadata, why_failed

__all__ = ['PropertiesWorkChain', 'job_parameters', 'summarise']

_KINDS = KINDS
_STATES = STATE_KINDS


def job_parameters(settings: dict, state: str, kind: str) -> dict:
    """The ``parameters`` of one job: ``settings['common']`` under ``settings[kind]``, the state's sampling from
    ``settings['state']`` (moments, n_states, seed; for PM also how its states are drawn) and its kind."""
    merged = {**settings.get('common', {}), **settings.get(kind, {})}
    merged['state'] = {**settings.get('state', {}), 'kind': state}
    if state != 'PM':  # an ordered state is one state: the PM sampling keys do not apply to it
        for key in PM_SAMPLING_KEYS:
            merged['state'].pop(key, None)
    return {'kind': kind, 'settings': merged}


def _jobs(value) -> list[tuple[str, str]]:
    states = list(value['states']) if 'states' in value else list(_STATES)
    kinds = list(value['properties']) if 'properties' in value else list(_KINDS)
    qha_states = list(value['qha_states']) if 'qha_states' in value else ['PM']
    return [(s, k) for s in states for k in kinds if k != 'qha' or s in qha_states]


def validate_inputs(value, ctx) -> str | None:
    """Every job's inputs checked as the job would check them, before any process exists."""
    for name, allowed in (('states', _STATES), ('properties', _KINDS), ('qha_states', _STATES)):
        if name in value:
            bad = sorted(set(value[name]) - set(allowed))
            if bad:
                return f'{name}: unknown {", ".join(bad)} (choose from {", ".join(allowed)})'
    if 'potential' not in value or 'structure' not in value:
        return None
    settings = value['settings'].get_dict() if 'settings' in value else {}
    unknown = sorted(set(settings) - {'common', 'state', *_KINDS})
    if unknown:
        return f'settings: unknown sections {", ".join(unknown)} (known: common, state, {", ".join(_KINDS)})'
    jobs = _jobs(value)
    if not jobs:
        return 'nothing to compute: no state and property pair (qha runs only for the states in qha_states)'
    for state, kind in jobs:
        problem = validate_properties(
            {
                'potential': value['potential'],
                'structure': value['structure'],
                'parameters': orm.Dict(job_parameters(settings, state, kind)),
            },
            ctx,
        )
        if problem:
            return f'{state} {kind}: {problem}'
    return None


@calcfunction
def summarise(**results: orm.Dict) -> dict:
    """One summary Dict of the jobs' results (link labels ``STATE_KIND``) and Table II as CSV."""
    from ..mtp.properties.elastic import TABLE_COLUMNS, comparison_rows

    summary, elastic = {}, {}
    order = {state: k for k, state in enumerate(_STATES)}
    for label, node in sorted(results.items(), key=lambda item: (order[item[0].split('_')[0]], item[0])):
        state, kind = label.split('_', 1)
        r = node.get_dict()
        entry = summary.setdefault(state, {})
        moments = r.get('mean_abs_moment_muB') or r.get('relax', {}).get('mean_abs_moment_muB')
        if moments:
            entry.setdefault('mean_abs_moment_muB', moments)
        if kind == 'elastic':
            elastic[state] = r['C_GPa']
            entry['elastic'] = {
                'C_GPa': r['C_GPa'],
                'born_stable': r['born_stability']['stable'],
                'crystal_system': r['crystal_system'],
                'lattice_A': r['lattice_A'],
                'stress_vs_energy': r.get('max_relative_difference_stress_vs_energy'),
            }
        elif kind == 'phonons':
            entry['phonons'] = {
                k: r[k]
                for k in (
                    'gamma_frequencies_THz',
                    'max_frequency_THz',
                    'min_frequency_THz',
                    'imaginary_mesh_modes',
                    'nac',
                )
            }
        elif kind == 'qha':
            entry['qha'] = {k: r[k] for k in ('alpha_per_K', 'cp_J_per_K_mol_atoms', 'extrapolated_above_K')}
        else:
            entry['average'] = {
                k: r[k]
                for k in (
                    'n_states',
                    'energy_per_atom_eV',
                    'energy_per_atom_sem_eV',
                    'force_on_displaced_eV_per_A',
                    'force_on_displaced_sem_eV_per_A',
                )
            }
    rows = comparison_rows(elastic)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(['state', 'method', *TABLE_COLUMNS])
    for row in rows:
        writer.writerow([row['state'], row['method'], *(f'{row[k]:.1f}' for k in TABLE_COLUMNS)])
    summary['table_ii'] = rows
    table = orm.SinglefileData(io.BytesIO(text.getvalue().encode()), filename='table_ii.csv')
    return {'summary': orm.Dict(summary), 'table_ii': table}


class PropertiesWorkChain(WorkChain):
    """Elastic constants, phonons, QHA and state averages of a potential for FM, AFM and PM states."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('code', valid_type=orm.AbstractCode, help='The engine command (mmtp).')
        spec.input('potential', valid_type=MtpPotentialData, help='The trained potential.')
        spec.input('structure', valid_type=orm.StructureData, help='Unit cell (conventional B1: 8 atoms).')
        spec.input('states', valid_type=orm.List, required=False, help='Of FM, AFM, PM (default: all three).')
        spec.input(
            'properties', valid_type=orm.List, required=False, help='Of average, elastic, phonons, qha (default: all).'
        )
        spec.input('qha_states', valid_type=orm.List, required=False, help='States that get a QHA (default: PM).')
        spec.input(
            'settings',
            valid_type=orm.Dict,
            required=False,
            help='Sections common, state (moments, n_states, seed), average, elastic, phonons, qha.',
        )
        spec.input('engine_options', valid_type=orm.Dict, required=False, help='metadata.options of the jobs.')
        spec.inputs.validator = validate_inputs
        spec.outline(cls.run_jobs, cls.results)
        spec.output('summary', valid_type=orm.Dict, help='Per state: elastic matrix and stability, phonons, QHA.')
        spec.output('table_ii', valid_type=orm.SinglefileData, help="Elastic constants beside the paper's Table II.")
        spec.output_namespace('plots', valid_type=orm.SinglefileData, dynamic=True, help='STATE_KIND_NAME: PNGs.')
        spec.output_namespace('results', valid_type=orm.Dict, dynamic=True, help='STATE_KIND: results per job.')
        spec.exit_code(400, 'ERROR_JOB_FAILED', message='{count} property job(s) failed, first: {message}')

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.AbstractCode,
        potential: MtpPotentialData,
        structure: orm.StructureData | None = None,
        protocol: str | None = None,
        overrides: dict | None = None,
    ):
        """A ready builder for ``protocol`` (``fast``, ``paper``; protocols/properties.yaml); ``structure``
        defaults to the 8-atom B1 CrN cell at a = 4.15 A; ``overrides`` change any protocol key."""
        from ..protocols import get_protocol_inputs
        from .campaign import crn_structure

        inputs = get_protocol_inputs('properties', protocol, overrides)
        builder = cls.get_builder()
        builder.code = code
        builder.potential = potential
        builder.structure = structure if structure is not None else crn_structure()
        for key in ('states', 'properties', 'qha_states'):
            builder[key] = orm.List(list(inputs[key]))
        builder.settings = orm.Dict(inputs['settings'])
        if inputs.get('engine_options'):
            builder.engine_options = orm.Dict(inputs['engine_options'])
        builder.metadata.label = f'properties ({protocol or "default"})'
        return builder

    def run_jobs(self):
        settings = self.inputs.settings.get_dict() if 'settings' in self.inputs else {}
        jobs = {}
        for state, kind in _jobs(self.inputs):
            label = f'{state}_{kind}'
            inputs = {
                'code': self.inputs.code,
                'potential': self.inputs.potential,
                'structure': self.inputs.structure,
                'parameters': orm.Dict(job_parameters(settings, state, kind)),
                'metadata': {**engine_metadata(self.inputs), 'call_link_label': label, 'label': f'{state} {kind}'},
            }
            jobs[label] = self.submit(MmtpPropertiesCalculation, **inputs)
        self.report(f'{len(jobs)} property jobs: {", ".join(jobs)}')
        return self.to_context(**jobs)

    def results(self):
        labels = [f'{s}_{k}' for s, k in _jobs(self.inputs)]
        failed = [self.ctx[label] for label in labels if not self.ctx[label].is_finished_ok]
        done = {label: self.ctx[label] for label in labels if self.ctx[label].is_finished_ok}
        for label, job in done.items():
            self.out(f'results.{label}', job.outputs.results)
            for name, node in job.outputs.plots.items() if 'plots' in job.outputs else []:
                self.out(f'plots.{label}_{name}', node)
        if done:
            out = summarise(**{label: job.outputs.results for label, job in done.items()})
            self.out('summary', out['summary'])
            self.out('table_ii', out['table_ii'])
        potential = self.inputs.potential
        potential.base.extras.set('properties', [*potential.base.extras.get('properties', []), self.node.uuid])
        if failed:
            for job in failed:
                self.report(f'failed: {why_failed(job)}')
            return self.exit_codes.ERROR_JOB_FAILED.format(count=len(failed), message=why_failed(failed[0]))
        self.report(f'all {len(done)} property jobs finished; summary and Table II written')
        return None
