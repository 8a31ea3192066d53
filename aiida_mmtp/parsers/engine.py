"""Parsers of the engine jobs (``mmtp.train``, ``mmtp.select``, ``mmtp.simulate``): files -> nodes."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
from aiida import orm
from aiida.engine import ExitCode
from aiida.parsers import Parser

from ..calculations.engine import MmtpSelectCalculation, MmtpSimulateCalculation
from ..calculations.label_ref import REFERENCE_FIDELITY, MmtpLabelRefCalculation
from ..calculations.train import MmtpTrainCalculation
from ..data.active_set import ActiveSetData
from ..data.potential import MtpPotentialData
from ..data.training_set import TrainingSetData
from ..mtp.cfg_io import read_cfg
from ..mtp.configuration import Configuration
from ..mtp.mtp_io import parse_mtp
from ..mtp.selection import ActiveSet

__all__ = ['MmtpLabelRefParser', 'MmtpPropertiesParser', 'MmtpSelectParser', 'MmtpSimulateParser', 'MmtpTrainParser']


class EngineParser(Parser):
    """Shared reading of retrieved files; a missing file becomes 310 with the log's last line, or 300.

    Files that become nodes of their own (potential, active set, configurations, trajectory) are retrieved into the
    temporary folder (``retrieve_temporary_list``): read here, never stored a second time in ``retrieved``."""

    def parse(self, **kwargs) -> ExitCode | None:
        folder = kwargs.get('retrieved_temporary_folder')
        self._temporary = Path(folder) if folder else None
        return self._parse()

    def _parse(self) -> ExitCode | None:
        raise NotImplementedError

    def _names(self) -> list[str]:
        names = self.retrieved.base.repository.list_object_names()
        if self._temporary is not None and self._temporary.is_dir():
            names += [p.name for p in self._temporary.iterdir() if p.is_file()]
        return names

    def _bytes(self, name: str) -> bytes:
        if name in self.retrieved.base.repository.list_object_names():
            return self.retrieved.base.repository.get_object_content(name, 'rb')
        return (self._temporary / name).read_bytes()

    def _missing(self, required: list[str], logs: list[str]) -> ExitCode | None:
        names = self._names()
        absent = [name for name in required if name not in names]
        if not absent:
            return None
        for log in logs:
            lines = [line.strip() for line in self._text(log).splitlines() if line.strip()] if log in names else []
            if lines:
                return self.exit_codes.ERROR_COMMAND_FAILED.format(message=lines[-1])
        return self.exit_codes.ERROR_OUTPUT_MISSING.format(filename=', '.join(absent))

    def _text(self, name: str) -> str:
        return self._bytes(name).decode()

    def _json(self, name: str) -> dict:
        return json.loads(self._text(name))

    def _read_cfg(self, name: str) -> list[Configuration]:
        """The configurations of a retrieved ``.cfg``, labels and features as written."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(self._bytes(name))
            return read_cfg(path)

    def _configurations(self, name: str, species: list[str]) -> tuple[TrainingSetData | None, np.ndarray]:
        """The configurations of a retrieved ``.cfg`` without labels (None if it has none), and their grades."""
        if name not in self._names():
            return None, np.zeros(0)
        configs = [cfg.clear_labels() for cfg in self._read_cfg(name)]
        if not configs:
            return None, np.zeros(0)
        grades = np.array([float(cfg.features.get('MV_grade', 'nan')) for cfg in configs])
        return TrainingSetData(configs, species), grades

    def _active_set(self, name: str) -> ActiveSetData:
        return ActiveSetData(ActiveSet.load(io.BytesIO(self._bytes(name))))


class MmtpTrainParser(EngineParser):
    """``output.mtp`` -> ``potential``; ``report.json`` -> ``report``; ``output.als`` -> ``active_set``."""

    def _parse(self) -> ExitCode | None:
        calc = MmtpTrainCalculation
        failed = self._missing([calc._POTENTIAL_OUT, calc._REPORT], [calc._LOG])
        if failed:
            return failed
        potential = parse_mtp(self._text(calc._POTENTIAL_OUT).splitlines(), calc._POTENTIAL_OUT)
        self.out('potential', MtpPotentialData(potential))
        self.out('report', orm.Dict(self._json(calc._REPORT)))
        settings = self.node.inputs.settings.get_dict() if 'settings' in self.node.inputs else {}
        if settings.get('active_set'):
            failed = self._missing([calc._ALS_OUT], [calc._SELECT_LOG])
            if failed:
                return failed
            self.out('active_set', self._active_set(calc._ALS_OUT))
        return None


class MmtpSelectParser(EngineParser):
    """``output.als`` -> ``active_set``; ``selected.cfg`` -> ``selected`` (if any); ``select.json`` -> ``report``."""

    def _parse(self) -> ExitCode | None:
        calc = MmtpSelectCalculation
        failed = self._missing([calc._ALS_OUT, calc._REPORT], [calc._LOG])
        if failed:
            return failed
        params = self.node.inputs.parameters.get_dict() if 'parameters' in self.node.inputs else {}
        if 'training_set' in self.node.inputs or params.get('updated_active_set'):  # else the refit rebuilds it
            self.out('active_set', self._active_set(calc._ALS_OUT))
        report = self._json(calc._REPORT)
        if 'candidates' in self.node.inputs:
            selected, _ = self._configurations(calc._SELECTED, self.node.inputs.potential.species)
            if selected is not None:
                self.out('selected', selected)
        self.out('report', orm.Dict(report))
        return None


class MmtpSimulateParser(EngineParser):
    """``final.cfg`` -> ``final``; ``preselected.cfg`` -> ``preselected`` (with ``grades``); the JSON report."""

    def _parse(self) -> ExitCode | None:
        calc = MmtpSimulateCalculation
        failed = self._missing([calc._FINAL, calc._REPORT], [calc._LOG])
        if failed:
            return failed
        species = self.node.inputs.potential.species
        final, _ = self._configurations(calc._FINAL, species)
        if final is None:
            return self.exit_codes.ERROR_OUTPUT_MISSING.format(filename=f'configuration in {calc._FINAL}')
        self.out('final', final)
        preselected, grades = self._configurations(calc._PRESELECTED, species)
        if preselected is not None:
            preselected.set_array('grades', grades)
            self.out('preselected', preselected)
        if calc._TRAJECTORY in self._names():
            content = self._bytes(calc._TRAJECTORY)
            self.out('trajectory', orm.SinglefileData(io.BytesIO(content), filename=calc._TRAJECTORY))
        self.out('report', orm.Dict(self._json(calc._REPORT)))
        return None


class MmtpLabelRefParser(EngineParser):
    """``labelled.cfg`` -> ``training_set``: every label made by this job (``sources``), at the model's fidelity."""

    def _parse(self) -> ExitCode | None:
        calc = MmtpLabelRefCalculation
        failed = self._missing([calc._OUTPUT], [calc._LOG])
        if failed:
            return failed
        configs = self._read_cfg(calc._OUTPUT)
        expected = len(self.node.inputs.configurations)
        if len(configs) != expected:
            return self.exit_codes.ERROR_OUTPUT_MISSING.format(
                filename=f'{expected} configurations in {calc._OUTPUT} (it has {len(configs)})'
            )
        species = self.node.inputs.configurations.species
        sources = [self.node.uuid] * len(configs)
        origins = self.node.inputs.configurations.origins
        self.out('training_set', TrainingSetData(configs, species, fidelity=dict(REFERENCE_FIDELITY), sources=sources,
                                                 origins=origins))  # fmt: skip
        return None


class MmtpPropertiesParser(EngineParser):
    """``results.json`` -> ``results``, ``arrays.npz`` -> ``arrays``, each PNG -> ``plots``, CSV -> ``tables``
    (of :class:`MmtpPropertiesCalculation` and :class:`MmtpScansCalculation`)."""

    def _parse(self) -> ExitCode | None:
        calc = self.node.process_class
        failed = self._missing([calc._RESULTS, calc._ARRAYS], [calc._LOG])
        if failed:
            return failed
        self.out('results', orm.Dict(self._json(calc._RESULTS)))
        arrays = orm.ArrayData()
        with np.load(io.BytesIO(self._bytes(calc._ARRAYS))) as data:
            for name in data.files:
                arrays.set_array(name, data[name])
        self.out('arrays', arrays)
        for name in sorted(self._names()):
            stem, _, ext = name.rpartition('.')
            if ext in ('png', 'csv'):
                content = self._bytes(name)
                node = orm.SinglefileData(io.BytesIO(content), filename=name)
                self.out(f'{"plots" if ext == "png" else "tables"}.{stem}', node)
        return None
