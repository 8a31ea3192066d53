"""``ExploreWorkChain`` (entry point ``mmtp.explore``): one simulation stage with on-the-fly grading.

Runs ``mmtp equilibrate``, ``relax`` or ``md`` (:class:`MmtpSimulateCalculation`)
of the starting configurations with the potential and its active set, split
over ``max_jobs`` jobs that run at the same time. Configurations with
gamma_low <= gamma are preselected; a run stops at gamma > gamma_up.
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import WorkChain, append_, calcfunction

from ..calculations.engine import MmtpSimulateCalculation
from ..data.training_set import TrainingSetData
from .common import why_failed
from .functions import subset

__all__ = ['ExploreWorkChain', 'gather']


@calcfunction
def gather(**sets: TrainingSetData) -> TrainingSetData:
    """Unlabelled sets of the same species, one after the other in the order of their link labels (set_K),
    with their ``grades`` when every set has them."""
    ordered = [sets[key] for key in sorted(sets, key=lambda name: int(name.split('_')[1]))]
    configs = [cfg for s in ordered for cfg in s.get_configurations()]
    out = TrainingSetData(configs, ordered[0].species)
    if all('grades' in s.get_arraynames() for s in ordered):
        out.set_array('grades', np.concatenate([s.get_array('grades') for s in ordered]))
    return out


class ExploreWorkChain(WorkChain):
    """Simulate every starting configuration, grading what it meets; return the preselected configurations."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.expose_inputs(MmtpSimulateCalculation, namespace='simulate')
        spec.input('max_jobs', valid_type=orm.Int, default=lambda: orm.Int(1),
                   help='Split the configurations over at most this many jobs.')  # fmt: skip
        spec.outline(cls.run_simulations, cls.results)
        spec.output('preselected', valid_type=TrainingSetData, required=False,
                    help='All configurations with gamma >= gamma_low (absent when none).')  # fmt: skip
        spec.output('report', valid_type=orm.Dict, help='Runs, preselected count, max grade, stops by extrapolation.')
        spec.exit_code(400, 'ERROR_SIMULATION_FAILED', message='A simulation job failed: {message}')

    def run_simulations(self):
        inputs = AttributeDict(self.exposed_inputs(MmtpSimulateCalculation, 'simulate'))
        n = len(inputs.configurations)
        n_jobs = max(1, min(self.inputs.max_jobs.value, n))
        chunks = np.array_split(np.arange(n), n_jobs)
        kind = inputs.parameters['kind']
        for k, chunk in enumerate(chunks):
            part = dict(inputs)
            if n_jobs > 1:
                part['configurations'] = subset(inputs.configurations, orm.List([int(i) for i in chunk]))
            part['metadata'] = {**part.get('metadata', {}), 'call_link_label': f'{kind.replace("-", "_")}_{k}'}
            self.to_context(jobs=append_(self.submit(MmtpSimulateCalculation, **part)))
        self.report(f'{kind} of {n} configurations in {n_jobs} job(s)')

    def results(self):
        failed = [job for job in self.ctx.jobs if not job.is_finished_ok]
        if failed:
            job = failed[0]
            return self.exit_codes.ERROR_SIMULATION_FAILED.format(message=why_failed(job))
        reports = [job.outputs.report.get_dict() for job in self.ctx.jobs]
        runs = [run for rep in reports for run in rep['runs']]
        summary = {
            'kind': reports[0]['kind'],
            'runs': len(runs),
            'stopped_by_extrapolation': sum(run['stop_reason'] == 'extrapolation' for run in runs),
            'preselected': sum(rep['preselected'] for rep in reports),
            'max_grade': max(rep['max_grade'] for rep in reports),
            'failed_runs': sum(run['stop_reason'].startswith('failed') for run in runs),
            'failures': sorted({run['stop_reason'] for run in runs if run['stop_reason'].startswith('failed')}),
            'jobs': [job.uuid for job in self.ctx.jobs],
        }
        sets = [job.outputs.preselected for job in self.ctx.jobs if 'preselected' in job.outputs]
        if len(sets) == 1:
            self.out('preselected', sets[0])
        elif sets:
            self.out('preselected', gather(**{f'set_{k}': s for k, s in enumerate(sets)}))
        self.out('report', orm.Dict(summary).store())
        self.node.base.extras.set_many({k: v for k, v in summary.items() if k != 'jobs'})
        self.report(f'{summary["runs"]} runs, max grade {summary["max_grade"]:.3g}, {summary["preselected"]} '
                    f'preselected, {summary["stopped_by_extrapolation"]} stopped by extrapolation, '
                    f'{summary["failed_runs"]} failed')  # fmt: skip
        return None
