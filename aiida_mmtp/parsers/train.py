"""``MmtpTrainParser`` (entry point ``mmtp.train``): the fitted potential and the fit report."""

from __future__ import annotations

import json

from aiida import orm
from aiida.engine import ExitCode
from aiida.parsers import Parser

from ..calculations.train import MmtpTrainCalculation
from ..data.potential import MtpPotentialData
from ..mtp.mtp_io import parse_mtp

__all__ = ['MmtpTrainParser']


class MmtpTrainParser(Parser):
    """``output.mtp`` -> ``potential`` (MtpPotentialData); ``report.json`` -> ``report`` (Dict)."""

    def parse(self, **kwargs) -> ExitCode | None:
        names = self.retrieved.base.repository.list_object_names()
        calc = MmtpTrainCalculation
        if calc._POTENTIAL_OUT not in names or calc._REPORT not in names:
            log = self.retrieved.get_object_content(calc._LOG) if calc._LOG in names else ''
            lines = [line for line in log.splitlines() if line.strip()]
            if lines:
                return self.exit_codes.ERROR_TRAIN_FAILED.format(message=lines[-1].strip())
            missing = calc._POTENTIAL_OUT if calc._POTENTIAL_OUT not in names else calc._REPORT
            return self.exit_codes.ERROR_OUTPUT_MISSING.format(filename=missing)
        text = self.retrieved.get_object_content(calc._POTENTIAL_OUT)
        potential = parse_mtp(text.splitlines(), calc._POTENTIAL_OUT)
        report = json.loads(self.retrieved.get_object_content(calc._REPORT))
        self.out('potential', MtpPotentialData(potential))
        self.out('report', orm.Dict(report))
        return None
