"""``mmtp.properties`` (:class:`MmtpPropertiesCalculation`): one property of a potential as a job; ``mmtp.scans``
(:class:`MmtpScansCalculation`): the potential on a reference's E(m), E(V) and strain scans.

Runs ``mmtp properties KIND`` (state average, elastic constants, phonons or
QHA; :mod:`aiida_mmtp.mtp.properties.run`) on any computer, with the potential
and the unit cell as input nodes and the numbers, curves, tables and plots as
output nodes, so that every result sits downstream of the potential in the
provenance graph.
"""

from __future__ import annotations

import json

from aiida import orm

from ..data.potential import MtpPotentialData
from ..data.training_set import TrainingSetData
from .engine import MmtpEngineCalculation

__all__ = ['MmtpPropertiesCalculation', 'MmtpScansCalculation', 'validate_properties']


def validate_properties(value, ctx) -> str | None:
    """Refuse, before anything runs: a structure with elements the potential lacks, unknown kinds or settings,
    a paramagnetic (or AFM) state of a non-magnetic potential, a QHA with too few volumes."""
    from ..mtp.properties.run import parse_state, validate_settings

    if 'parameters' not in value or 'potential' not in value:
        return None
    params = value['parameters'].get_dict()
    kind = params.get('kind')
    settings = params.get('settings', {})
    unknown = sorted(set(params) - {'kind', 'settings'})
    if unknown:
        return f'parameters: unknown keys {", ".join(unknown)} (known: kind, settings)'
    potential = value['potential']
    if 'structure' in value:
        structure = value['structure']
        symbols = {kind_.symbol for kind_ in structure.kinds}
        missing = sorted(symbols - set(potential.species))
        if missing:
            return (
                f'the structure has {", ".join(missing)}, but the potential is for '
                f'{", ".join(potential.species)}: a potential for other species'
            )
    try:
        validate_settings(kind, settings)
        parse_state(_PotentialView(potential), settings)
    except ValueError as exc:
        return str(exc)
    return None


def _file_outputs(spec, results: str, arrays: str) -> None:
    """The outputs the ``mmtp.properties`` parser makes of results.json, arrays.npz, PNG and CSV files."""
    spec.inputs['metadata']['options']['parser_name'].default = 'mmtp.properties'
    spec.output('results', valid_type=orm.Dict, help=results)
    spec.output('arrays', valid_type=orm.ArrayData, help=arrays)
    spec.output_namespace('plots', valid_type=orm.SinglefileData, dynamic=True, help='PNG figures.')
    spec.output_namespace('tables', valid_type=orm.SinglefileData, dynamic=True, help='CSV tables.')
    spec.default_output_node = 'results'


class _PotentialView:
    """What :func:`parse_state` needs of a potential, from the node's attributes (nothing is loaded)."""

    def __init__(self, node: MtpPotentialData) -> None:
        self.species = tuple(node.species)
        self.is_magnetic = int(node.base.attributes.get('magnetic_basis_size', 1)) > 1
        ranges = node.base.attributes.get('moment_ranges') or [[0.0, 0.0]] * len(self.species)
        self.mag_max = [max(abs(lo), abs(hi)) for lo, hi in ranges]


class MmtpPropertiesCalculation(MmtpEngineCalculation):
    """One property (``parameters.kind``: average, elastic, phonons, qha) of a potential for a unit cell."""

    _STRUCTURE = 'structure.cfg'
    _SETTINGS = 'settings.json'
    _RESULTS = 'results.json'
    _ARRAYS = 'arrays.npz'
    _LOG = 'properties.log'

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('structure', valid_type=orm.StructureData, help='The unit cell (e.g. the 8-atom B1 cell).')
        spec.input(
            'parameters',
            valid_type=orm.Dict,
            help='kind (average, elastic, phonons, qha) and settings (state, relax, strains, mesh, NAC, '
            'volumes...: see aiida_mmtp.mtp.properties.run).',
        )
        spec.inputs.validator = validate_properties
        _file_outputs(spec, 'Numbers: elastic matrix, stability, frequencies, ...',
                      'Curves and matrices (bands, DOS, QHA, convergence).')  # fmt: skip

    def prepare_for_submission(self, folder):
        from ..mtp.cfg_io import write_cfg
        from ..workchains.functions import structure_to_configuration

        self._write_potential(folder)
        species = self.inputs.potential.species
        write_cfg([structure_to_configuration(self.inputs.structure, species)], folder.get_abs_path(self._STRUCTURE))
        params = self.inputs.parameters.get_dict()
        with folder.open(self._SETTINGS, 'w') as handle:
            handle.write(json.dumps(params.get('settings', {}), indent=2))
        args = [
            'properties',
            params['kind'],
            self._POTENTIAL_IN,
            '--structure',
            self._STRUCTURE,
            '--settings',
            self._SETTINGS,
            '--output-dir',
            '.',
            '--species',
            *species,
        ]
        return self._calcinfo(folder, [(args, self._LOG)], [self._RESULTS, self._ARRAYS, '*.png', '*.csv'])


def validate_scans(value, ctx) -> str | None:
    """Refuse labels of other species than the potential's, and labels without scan origins."""
    if 'labels' not in value or 'potential' not in value:
        return None
    labels, potential = value['labels'], value['potential']
    if list(labels.species) != list(potential.species):
        return f'the labels are for {", ".join(labels.species)}, the potential for {", ".join(potential.species)}'
    origins = labels.origins
    if origins is None or len(origins) != len(labels):
        return 'the labels carry no scan origins (attribute origins, one per configuration)'
    return None


class MmtpScansCalculation(MmtpEngineCalculation):
    """``mmtp scans``: a potential on the cells of labelled E(m), E(V) and strain scans, analysed beside them
    (:mod:`aiida_mmtp.mtp.properties.scans`)."""

    _LABELS = 'labels.cfg'
    _RESULTS = 'results.json'
    _ARRAYS = 'arrays.npz'
    _LOG = 'scans.log'

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('labels', valid_type=TrainingSetData,
                   help='The labelled scans, with their origins (attribute origins: STATE:KIND:VALUE).')  # fmt: skip
        spec.inputs.validator = validate_scans
        _file_outputs(spec, 'reference, potential, comparison (see mtp.properties.scans).',
                      'Energies (eV) and stresses (GPa) of both, per cell.')  # fmt: skip

    def prepare_for_submission(self, folder):
        from ..mtp.cfg_io import write_cfg

        self._write_potential(folder)
        configs = self.inputs.labels.get_configurations()
        for cfg, origin in zip(configs, self.inputs.labels.origins):
            cfg.features = {'origin': origin}
        write_cfg(configs, folder.get_abs_path(self._LABELS))
        args = ['scans', self._POTENTIAL_IN, '--labels', self._LABELS, '--output-dir', '.',
                '--species', *self.inputs.potential.species]  # fmt: skip
        return self._calcinfo(folder, [(args, self._LOG)], [self._RESULTS, self._ARRAYS, '*.png'])
