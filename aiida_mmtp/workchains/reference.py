"""``CdftReferenceWorkChain`` (entry point ``mmtp.cdft_reference``): same-fidelity cDFT properties, and a potential
beside them.

The paper's Table II "DFT (this work)" column, computed with a campaign's own cDFT settings in its own cell, for
the ordered states (FM, layered AFM), in three labelling steps
(:mod:`aiida_mmtp.mtp.properties.scans` analyses them):

1. ``moment``: every magnetic atom at each size of ``settings.moments`` (mu_B), ideal cell -> the equilibrium
   moment m0 per state (where the magnetic force along the moments changes sign);
2. ``scale``: the cell at the lattice ratios ``settings.scales`` at m0 -> a0, B and E0 (Birch-Murnaghan), and the
   FM-AFM energy difference at each state's own m0 and a0;
3. ``strain``: the cell at (m0, a0), unstrained and under +-``settings.strain`` of ``settings.components`` ->
   C11, C12, C13, C44 from the stresses (and the diagonal ones from the energies).

Each step labels its configurations with :class:`CdftLabelWorkChain` and the inputs of namespace ``label`` (the
campaign's: code, parameters, pseudopotentials, k-point rule), so these are the campaign labels' own fidelity. The
configurations of a step are made by a calcfunction from the labels of the steps before it, so the provenance
graph shows which m0 and a0 they used. With AiiDA caching on for the cDFT runs, a second reference at the same
settings runs no ABINIT.

With ``potential`` (and the engine ``code``), an ``mmtp.scans`` job evaluates the potential on the same cells and
moments, analyses it alike, equilibrates its moments at the reference's (m0, a0) cell, and sets every number beside
the reference's with the tolerances of :data:`~aiida_mmtp.mtp.properties.scans.TOLERANCES` (``comparison``; a
PNG of E(m) and E(V) in ``plot``).
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain, calcfunction, if_

from ..calculations.functions import concatenate_training_sets
from ..calculations.properties import MmtpScansCalculation
from ..data.potential import MtpPotentialData
from ..data.training_set import TrainingSetData
from ..mtp.structures import VOIGT_COMPONENTS
from .common import engine_metadata, why_failed
from .functions import structure_to_configuration
from .label import CdftLabelWorkChain

__all__ = ['SCANS', 'CdftReferenceWorkChain', 'reference_properties', 'scan_set', 'scan_settings']

#: Keys of ``settings`` and their defaults. ``moments``: moment sizes of the magnetic atoms (mu_B), at least 2,
#: within the potential's moment range when one is compared; ``scales``: lattice ratios, at least 5; ``strain``:
#: the strain magnitude; ``components``: Voigt components strained with both signs.
SCANS = {
    'states': ['FM', 'AFM'],
    'moments': [1.0, 1.5, 2.0, 2.5, 3.0],
    'scales': [0.98, 0.99, 1.0, 1.01, 1.02],
    'strain': 0.01,
    'components': ['xx', 'yz'],
}
_STEPS = ('moment', 'scale', 'strain')


def scan_settings(value: dict) -> dict:
    """``value`` completed with :data:`SCANS`; ValueError naming the first problem."""
    unknown = sorted(set(value) - set(SCANS))
    if unknown:
        raise ValueError(f'settings: unknown keys {", ".join(unknown)} (known: {", ".join(SCANS)})')
    s = {**SCANS, **value}
    bad = sorted(set(s['states']) - {'FM', 'AFM'})
    if bad or not s['states']:
        raise ValueError(f'settings.states: ordered states FM and/or AFM, got {s["states"]}')
    if len(set(s['moments'])) < 2 or min(s['moments']) <= 0:
        raise ValueError(f'settings.moments: at least 2 different positive sizes (mu_B), got {s["moments"]}')
    if len(set(s['scales'])) < 5 or min(s['scales']) <= 0:
        raise ValueError(f'settings.scales: at least 5 different positive lattice ratios, got {s["scales"]}')
    if not 0 < float(s['strain']) <= 0.05:
        raise ValueError(f'settings.strain: a magnitude in (0, 0.05], got {s["strain"]}')
    bad = sorted(set(s['components']) - set(VOIGT_COMPONENTS))
    if bad:
        raise ValueError(f'settings.components: Voigt components (xx ... xy), got {", ".join(bad)}')
    return s


def _analysis(sets) -> dict:
    from ..mtp.properties.scans import analyse_scans

    configs, origins = [], []
    for labels in sets:
        configs += labels.get_configurations()
        origins += list(labels.origins)
    return analyse_scans(configs, origins)


def _choices(settings: dict, analysis: dict, step: str, volume: float) -> dict[str, dict]:
    """Per state, the moment size (mu_B) and lattice ratio that the configurations of ``step`` use, with notes: the
    analysed minimum, or the nearest scanned value when the minimum is not inside the scan. ``volume``: A^3 per
    atom of the cell at ratio 1."""
    out = {}
    for state in settings['states']:
        entry = analysis.get(state, {})
        choice = {'moment': None, 'scale': 1.0, 'notes': []}
        moment = entry.get('moment')
        if moment is not None and moment['m0_muB'] is not None:
            choice['moment'] = moment['m0_muB']
        elif moment is not None:  # E(m) has no minimum inside the scan: its lowest-energy point
            curve = np.array(moment['curve'])
            choice['moment'] = float(curve[np.argmin(curve[:, 1]), 0])
            choice['notes'].append(f'E(m) minimum {moment["where"]}: the lowest scanned point is used')
        if step == 'strain' and 'eos' in entry and entry['eos']['V0_A3_per_atom'] is None:
            choice['notes'].append('E(V) has no minimum: strains at lattice ratio 1')
        elif step == 'strain' and 'eos' in entry:
            ratio = (entry['eos']['V0_A3_per_atom'] / volume) ** (1 / 3)
            lo, hi = min(settings['scales']), max(settings['scales'])
            if not lo <= ratio <= hi:
                choice['notes'].append(f'V0 outside the scanned volumes: lattice ratio {ratio:.4f} clipped')
                ratio = min(max(ratio, lo), hi)
            choice['scale'] = float(ratio)
        out[state] = choice
    return out


@calcfunction
def scan_set(structure: orm.StructureData, parameters: orm.Dict, **labels: TrainingSetData) -> TrainingSetData:
    """The unlabelled configurations of one step (``parameters``: ``step``, ``species``, ``magnetic`` elements,
    ``settings``) of every state, each with its origin; ``labels``: the labelled steps before it, from which the
    moment m0 and lattice ratio come (recorded in the attribute ``choices``)."""
    from ..mtp.structures import scan_configurations

    p = parameters.get_dict()
    settings, species, step = p['settings'], list(p['species']), p['step']
    unit = structure_to_configuration(structure, species)
    magnetic = [species.index(el) for el in p['magnetic']]
    analysis = _analysis(labels.values()) if labels else {}
    choices = _choices(settings, analysis, step, unit.volume / unit.natoms)
    configs = []
    for state in settings['states']:
        choice = choices[state]
        if step != 'moment' and choice['moment'] is None:
            raise ValueError(f'the {state} E(m) scan has no labels: no moment to scan the lattice at')
        if step == 'moment':
            values = settings['moments']
        elif step == 'scale':
            values = settings['scales']
        else:
            e = float(settings['strain'])
            values = [(c, sign * e) for c in settings['components'] for sign in (1, -1)]
        configs += scan_configurations(unit, magnetic, state, step, values, moment=choice['moment'] or 0.0,
                                       scale=choice['scale'])  # fmt: skip
    out = TrainingSetData(configs, species, origins=[cfg.features['origin'] for cfg in configs])
    out.base.attributes.set('choices', choices)
    return out


@calcfunction
def reference_properties(**labels: TrainingSetData) -> dict:
    """The labelled steps as one set (``labels``, origins kept) and their analysis (``reference``; see
    :func:`aiida_mmtp.mtp.properties.scans.analyse_scans`)."""
    from ..mtp.properties.run import json_safe

    sets = [labels[name] for name in sorted(labels)]
    merged = concatenate_training_sets(sets)
    analysis = json_safe(_analysis(sets))
    return {'labels': merged, 'reference': orm.Dict(analysis)}


def validate_inputs(value, ctx) -> str | None:
    """Settings, magnetic species and, where a potential is compared, its species and the engine code."""
    try:
        settings = scan_settings(value['settings'].get_dict() if 'settings' in value else {})
    except ValueError as exc:
        return str(exc)
    if 'structure' not in value or 'magnetic_moments' not in value:
        return None
    elements = sorted({kind.symbol for kind in value['structure'].kinds})
    magnetic = sorted(el for el, m in value['magnetic_moments'].get_dict().items() if float(m) != 0)
    if not magnetic or set(magnetic) - set(elements):
        return f'magnetic_moments: give sizes for magnetic species of the structure ({", ".join(elements)})'
    if 'potential' in value:
        potential = value['potential']
        if sorted(potential.species) != elements:
            return f'the potential is for {", ".join(potential.species)}, the structure has {", ".join(elements)}'
        if 'code' not in value:
            return 'give the engine code (`code`) to evaluate the potential'
        ranges = potential.base.attributes.get('moment_ranges') or []
        for el in magnetic:
            hi = max(abs(x) for x in ranges[potential.species.index(el)]) if ranges else None
            if hi is not None and max(settings['moments']) > hi + 1e-9:
                return (f'settings.moments reach {max(settings["moments"])} mu_B, beyond the potential\'s moment '
                        f'range of {el} ({hi:g} mu_B)')  # fmt: skip
    return None


class CdftReferenceWorkChain(WorkChain):
    """E(m), E(V) and strain scans by cDFT at the labels' fidelity; optionally a potential on the same cells."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('structure', valid_type=orm.StructureData, help="The cell (e.g. the campaign's 8-atom B1 cell).")
        spec.input('magnetic_moments', valid_type=orm.Dict, help='{element: moment size, mu_B} of magnetic species.')
        spec.input('settings', valid_type=orm.Dict, required=False, help=f'Scan settings: {", ".join(SCANS)}.')
        spec.input('potential', valid_type=MtpPotentialData, required=False, help='A potential to compare.')
        spec.input('code', valid_type=orm.AbstractCode, required=False, help='The engine (`mmtp`) code.')
        spec.input('engine_options', valid_type=orm.Dict, required=False, help='metadata.options of the engine job.')
        spec.expose_inputs(CdftLabelWorkChain, namespace='label', exclude=('configurations',))
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            cls.label_step, cls.inspect_step,
            cls.label_step, cls.inspect_step,
            cls.label_step, cls.inspect_step,
            cls.analyse,
            if_(cls.compares)(cls.run_potential, cls.inspect_potential),
        )  # fmt: skip
        spec.output('labels', valid_type=TrainingSetData, help='Every scan label (attribute origins).')
        spec.output('reference', valid_type=orm.Dict, help='Per state: moment, eos, elastic; the FM-AFM difference.')
        spec.output('comparison', valid_type=orm.Dict, required=False,
                    help='reference, potential, equilibrated moments and the comparison rows.')  # fmt: skip
        spec.output('plot', valid_type=orm.SinglefileData, required=False, help='E(m) and E(V): both (PNG).')
        spec.exit_code(400, 'ERROR_LABELLING', message='The {step} scan labelled nothing: {message}')
        spec.exit_code(410, 'ERROR_ANALYSIS', message='The scans could not be analysed: {message}')
        spec.exit_code(420, 'ERROR_POTENTIAL', message='The potential could not be evaluated: {message}')

    def setup(self):
        self.ctx.settings = scan_settings(self.inputs.settings.get_dict() if 'settings' in self.inputs else {})
        self.ctx.step = 0
        self.ctx.labelled = {}
        species = sorted({kind.symbol for kind in self.inputs.structure.kinds})
        if 'potential' in self.inputs:
            species = list(self.inputs.potential.species)
        self.ctx.species = species
        magnetic = self.inputs.magnetic_moments.get_dict()
        self.ctx.magnetic = [el for el in species if float(magnetic.get(el, 0)) != 0]

    def label_step(self):
        step = _STEPS[self.ctx.step]
        parameters = orm.Dict({'step': step, 'species': self.ctx.species, 'magnetic': self.ctx.magnetic,
                               'settings': self.ctx.settings})  # fmt: skip
        try:
            configurations = scan_set(self.inputs.structure, parameters, **self.ctx.labelled)
        except ValueError as exc:
            return self.exit_codes.ERROR_ANALYSIS.format(message=str(exc))
        inputs = AttributeDict(self.exposed_inputs(CdftLabelWorkChain, 'label'))
        inputs.configurations = configurations
        inputs.metadata = {'call_link_label': f'{step}_scan', 'label': f'{step} scan'}
        choices = configurations.base.attributes.get('choices')
        if step != 'moment':
            text = '; '.join(f'{s} m {c["moment"]:.3f} mu_B, lattice ratio {c["scale"]:.4f}'
                             + ''.join(f' ({n})' for n in c['notes']) for s, c in choices.items())  # fmt: skip
            self.report(f'{step} scan at {text}')
        self.report(f'labelling the {step} scan: {len(configurations)} configurations')
        return ToContext(labelling=self.submit(CdftLabelWorkChain, **inputs))

    def inspect_step(self):
        step = _STEPS[self.ctx.step]
        node = self.ctx.labelling
        if 'training_set' not in node.outputs:
            return self.exit_codes.ERROR_LABELLING.format(step=step, message=why_failed(node))
        if not node.is_finished_ok:
            self.report(f'{step} scan: {why_failed(node)}; going on with its {len(node.outputs.training_set)} labels')
        self.ctx.labelled[f'step{self.ctx.step}_{step}'] = node.outputs.training_set
        self.ctx.step += 1
        return None

    def analyse(self):
        try:
            out = reference_properties(**self.ctx.labelled)
        except ValueError as exc:
            return self.exit_codes.ERROR_ANALYSIS.format(message=str(exc))
        self.out('labels', out['labels'])
        self.out('reference', out['reference'])
        self.ctx.labels = out['labels']
        self.report(summary_line(out['reference'].get_dict()))
        return None

    def compares(self) -> bool:
        return 'potential' in self.inputs

    def run_potential(self):
        inputs = {'code': self.inputs.code, 'potential': self.inputs.potential, 'labels': self.ctx.labels,
                  'metadata': {**engine_metadata(self.inputs), 'call_link_label': 'potential_on_scans'}}  # fmt: skip
        return ToContext(scans=self.submit(MmtpScansCalculation, **inputs))

    def inspect_potential(self):
        job = self.ctx.scans
        if not job.is_finished_ok:
            return self.exit_codes.ERROR_POTENTIAL.format(message=why_failed(job))
        self.out('comparison', job.outputs.results)
        if 'plots' in job.outputs and 'scans' in job.outputs.plots:
            self.out('plot', job.outputs.plots.scans)
        rows = job.outputs.results['comparison']
        passed = sum(row['within'] for row in rows)
        self.report(f'the potential is within tolerance on {passed} of {len(rows)} reference quantities')
        return None


def summary_line(reference: dict) -> str:
    """One line of the reference numbers: per state m0, a0, B, C11, C12, C44, and E_FM - E_AFM."""
    parts = []
    for state in ('FM', 'AFM'):
        entry = reference.get(state)
        if not entry:
            continue
        m0 = entry.get('moment', {}).get('m0_muB')
        eos, el = entry.get('eos', {}), entry.get('elastic', {})
        text = [f'm0 {m0:.2f} mu_B' if m0 is not None else f'm0 {entry.get("moment", {}).get("where", "-")}']
        if eos and eos['a0_A'] is not None:
            text.append(f'a0 {eos["a0_A"]:.4f} A, B {eos["B_GPa"]:.0f} GPa')
        elif eos:
            text.append('E(V) without a minimum')
        if el:
            text.append(', '.join(f'{k[:3]} {el[k]:.0f}' for k in ('C11_GPa', 'C12_GPa', 'C44_GPa') if k in el))
        parts.append(f'{state}: ' + ', '.join(text))
    if 'E_FM_minus_AFM_meV_per_atom' in reference:
        parts.append(f'E_FM - E_AFM {reference["E_FM_minus_AFM_meV_per_atom"]:.1f} meV/atom')
    return 'cDFT reference: ' + '; '.join(parts)
