"""``ActiveLearningIterationWorkChain`` (entry point ``mmtp.al_iteration``): explore -> select -> label -> refit.

One iteration of the paper's loop: simulate with the current potential,
grading on the fly (:class:`ExploreWorkChain`); select by maxvol among the
preselected configurations, at most ``max_selected``
(:class:`MmtpSelectCalculation`); label them by cDFT
(:class:`CdftLabelWorkChain`, or another labeller: :mod:`.labellers`), failures recorded, never trained on; screen
the new labels against the training set (label hygiene,
:mod:`aiida_mmtp.mtp.hygiene`: refused labels are recorded with their reason
and never trained on); add the others to the training set; refit and rebuild the active set
(:class:`FitWorkChain`). When nothing is selected, the iteration returns the
potential, active set and training set it was given: the loop has converged
for these simulations, provided that every run finished. A run that failed
(atoms closer than the potential's min_dist, a non-finite energy) explored
nothing past its failure: when nothing is selected and a run failed, the
iteration exits ``ERROR_RUNS_FAILED`` (407) with the engine's messages, never
"converged". Failed runs that preselected configurations before failing are
counted (``failed_runs``) and their selections labelled as usual: the refit
potential is what should stop them failing. With ``simulation.kind`` ``label`` nothing is simulated:
every configuration is labelled and the potential refitted (the paper's
shear strains, labelled directly).
"""

from __future__ import annotations

from aiida import orm
from aiida.engine import ToContext, WorkChain, if_

from ..calculations.engine import MmtpSelectCalculation
from ..calculations.functions import merge_training_sets, screen_new_labels
from ..data.active_set import ActiveSetData
from ..data.potential import MtpPotentialData
from ..data.training_set import TrainingSetData
from .common import engine_metadata, why_failed
from .explore import ExploreWorkChain
from .fit import FitWorkChain, rmse_summary
from .functions import subset
from .label import configuration_problem
from .labellers import define_labelling, labeller_of, labelling_problem, uses_cdft

__all__ = ['ActiveLearningIterationWorkChain', 'unlabelable', 'validate_inputs']


def unlabelable(configurations: TrainingSetData, label_inputs) -> dict[int, str]:
    """Configurations the cDFT job would refuse (e.g. overlapping spheres after MD): index -> reason (``label_inputs``:
    those of the cDFT labeller)."""
    abinit = label_inputs['cdft']['abinit']
    params = abinit['parameters'].get_dict()
    pseudos = dict(abinit.get('pseudos', {}))
    refused = {}
    for k, cfg in enumerate(configurations.get_configurations()):
        problem = configuration_problem(cfg, configurations.species, params, pseudos)
        if problem:
            refused[k] = problem
    return refused


def validate_inputs(value, ctx) -> str | None:
    """One labeller (:func:`~.labellers.labelling_problem`)."""
    return labelling_problem(value)


class ActiveLearningIterationWorkChain(WorkChain):
    """Explore with the potential, select by maxvol, label by cDFT, refit."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('code', valid_type=orm.AbstractCode, help='The engine (`mmtp`) code.')
        spec.input('potential', valid_type=MtpPotentialData, help='The fitted potential.')
        spec.input('active_set', valid_type=ActiveSetData, help='Its active set.')
        spec.input('training_set', valid_type=TrainingSetData, help='The labelled set it was fitted to.')
        spec.input('configurations', valid_type=TrainingSetData, help='Starting configurations of the simulations.')
        spec.input('simulation', valid_type=orm.Dict,
                   help='mmtp.simulate parameters (kind, gammas, steps...); kind `label`: label them all.')  # fmt: skip
        spec.input('max_selected', valid_type=orm.Int, default=lambda: orm.Int(20), help='Selection cap.')
        spec.input('max_jobs', valid_type=orm.Int, default=lambda: orm.Int(1), help='Simulation jobs at a time.')
        spec.input('train_settings', valid_type=orm.Dict, required=False, help='Settings of mmtp.train.')
        spec.input('engine_options', valid_type=orm.Dict, required=False,
                   help='metadata.options of the engine jobs (resources, walltime, queue).')  # fmt: skip
        spec.input(
            'test_set',
            valid_type=TrainingSetData,
            required=False,
            help='Held-out labelled configurations: the refit reports its errors on them (never fitted).',
        )
        spec.input('hygiene', valid_type=orm.Dict, default=lambda: orm.Dict({}),
                   help='Label hygiene limits (aiida_mmtp.mtp.hygiene.HygieneRule); {}: the defaults.')  # fmt: skip
        define_labelling(spec)
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.explore,
            cls.select,
            if_(cls.has_selected)(cls.label, cls.refit),
            cls.results,
        )
        spec.output('potential', valid_type=MtpPotentialData, help='The refitted potential (or the one given).')
        spec.output('active_set', valid_type=ActiveSetData, help='Its active set.')
        spec.output('training_set', valid_type=TrainingSetData, help='The training set with the new labels.')
        spec.output('selected', valid_type=TrainingSetData, required=False, help='What maxvol selected.')
        spec.output('summary', valid_type=orm.Dict,
                    help='candidates, selected, labelled, failed, refused labels, why, grade, RMSEs.')  # fmt: skip
        spec.exit_code(401, 'ERROR_EXPLORE_FAILED', message='The exploration failed: {message}')
        spec.exit_code(402, 'ERROR_SELECT_FAILED', message='The selection failed: {message}')
        spec.exit_code(403, 'ERROR_LABELLING_FAILED', message='No selected configuration could be labelled: {message}')
        spec.exit_code(404, 'ERROR_FIT_FAILED', message='The refit failed: {message}')
        spec.exit_code(405, 'ERROR_TOO_MANY_FAILURES',
                       message='The labelling failed beyond its tolerance: {message}; its good labels are kept in the '
                       'provenance (continue with restart_from)')  # fmt: skip
        spec.exit_code(406, 'ERROR_ALL_LABELS_REFUSED',
                       message='Label hygiene refused every new label ({reasons}): the same configurations would be '
                       'selected again; check the cDFT settings or the hygiene limits')  # fmt: skip
        spec.exit_code(407, 'ERROR_RUNS_FAILED',
                       message='{failed} of {runs} simulation runs failed and nothing new was selected, so these '
                       'simulations are not converged: {failures}')  # fmt: skip

    def _direct(self) -> bool:
        """A ``label`` stage: every configuration is labelled (the paper's shear strains), none is simulated."""
        return self.inputs.simulation['kind'] == 'label'

    def explore(self):
        self.ctx.summary = {'candidates': 0, 'selected': 0, 'labelled': 0, 'failed': 0, 'max_grade': 0.0}
        if self._direct():
            return None
        simulate = {'code': self.inputs.code, 'potential': self.inputs.potential, 'active_set': self.inputs.active_set,
                    'configurations': self.inputs.configurations, 'parameters': self.inputs.simulation,
                    'metadata': engine_metadata(self.inputs)}  # fmt: skip
        node = self.submit(ExploreWorkChain, simulate=simulate, max_jobs=self.inputs.max_jobs)
        return ToContext(explore=node)

    def select(self):
        if self._direct():
            self.ctx.summary.update(
                candidates=len(self.inputs.configurations), selected=len(self.inputs.configurations)
            )
            self.report(f'labelling all {len(self.inputs.configurations)} configurations (no simulation)')
            return None
        node = self.ctx.explore
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_EXPLORE_FAILED.format(message=why_failed(node))
        report = node.outputs.report.get_dict()
        self.ctx.summary.update(candidates=report['preselected'], max_grade=report['max_grade'], runs=report['runs'],
                                stopped_by_extrapolation=report['stopped_by_extrapolation'],
                                failed_runs=report['failed_runs'], run_failures=report['failures'])  # fmt: skip
        if 'preselected' not in node.outputs:
            self.report(f'nothing preselected (max grade {report["max_grade"]:.3g})')
            return None
        inputs = {'code': self.inputs.code, 'potential': self.inputs.potential, 'active_set': self.inputs.active_set,
                  'candidates': node.outputs.preselected,
                  'parameters': orm.Dict({'max_selected': self.inputs.max_selected.value}),
                  'metadata': engine_metadata(self.inputs)}  # fmt: skip
        return ToContext(select=self.submit(MmtpSelectCalculation, **inputs))

    def has_selected(self) -> bool:
        if self._direct():
            return True
        if 'select' not in self.ctx:
            return False
        node = self.ctx.select
        if not node.is_finished_ok:
            self.ctx.failed_step = self.exit_codes.ERROR_SELECT_FAILED.format(message=why_failed(node))
            return False
        has = 'selected' in node.outputs
        self.ctx.summary['selected'] = len(node.outputs.selected) if has else 0
        self.report(f'{self.ctx.summary["selected"]} of {self.ctx.summary["candidates"]} candidates selected')
        return has

    def label(self):
        selected = self.inputs.configurations if self._direct() else self.ctx.select.outputs.selected
        self.out('selected', selected)
        labeller, inputs = labeller_of(self)
        refused = unlabelable(selected, inputs) if uses_cdft(self.inputs) else {}
        if refused:
            for k, why in refused.items():
                self.report(f'selected configuration {k + 1} cannot be labelled and is left out: {why}')
            self.ctx.summary['refused'] = {str(k): why for k, why in refused.items()}
            keep = [k for k in range(len(selected)) if k not in refused]
            if not keep:
                self.ctx.summary['failed'] = len(refused)
                return None
            selected = subset(selected, orm.List(keep))
        inputs.configurations = selected
        return ToContext(label=self.submit(labeller, **inputs))

    def refit(self):
        summary = self.ctx.summary
        node = self.ctx.get('label')
        if node is None:  # every selected configuration was refused before any cDFT run: recorded, nothing to fit
            self.report('no selected configuration can be labelled: the potential stays as it was')
            return None
        if 'training_set' not in node.outputs:
            self.ctx.failed_step = self.exit_codes.ERROR_LABELLING_FAILED.format(message=why_failed(node))
            return None
        if not node.is_finished_ok:  # over its failure budget: stop here, never train on a batch like that
            self.ctx.failed_step = self.exit_codes.ERROR_TOO_MANY_FAILURES.format(message=why_failed(node))
            return None
        failures = node.outputs.failures.get_dict()
        summary['labelled'] = len(node.outputs.training_set)
        summary['failed'] = failures['n_failed'] + len(summary.get('refused', {}))
        screened = screen_new_labels(new=node.outputs.training_set, existing=self.inputs.training_set,
                                     rule=self.inputs.hygiene)  # fmt: skip
        refused = screened['refused'].get_dict()
        summary['refused_labels'] = refused['n_refused']
        summary['refused_label_reasons'] = [item['reason'] for item in refused['refused']]
        for item in refused['refused']:
            self.report(f'label {item["index"] + 1} refused by label hygiene: {item["reason"]}')
        if 'accepted' not in screened:  # nothing to learn from: the next iteration would select the same again
            reasons = '; '.join(summary['refused_label_reasons'])
            self.ctx.failed_step = self.exit_codes.ERROR_ALL_LABELS_REFUSED.format(reasons=reasons)
            return None
        self.ctx.training_set = merge_training_sets(a=self.inputs.training_set, b=screened['accepted'])
        train = {'code': self.inputs.code, 'potential': self.inputs.potential, 'training_set': self.ctx.training_set,
                 'metadata': engine_metadata(self.inputs)}  # fmt: skip
        settings = self.inputs.train_settings.get_dict() if 'train_settings' in self.inputs else {}
        train['settings'] = orm.Dict({**settings, 'earlier': len(self.inputs.training_set)})  # fit quality
        if 'test_set' in self.inputs:
            train['test_set'] = self.inputs.test_set
        return ToContext(fit=self.submit(FitWorkChain, train=train))

    def results(self):
        if 'failed_step' in self.ctx:
            return self.ctx.failed_step
        summary = self.ctx.summary
        if summary['selected'] == 0 and summary.get('failed_runs', 0):  # converged only when the runs finished
            self.node.base.extras.set_many({k: v for k, v in summary.items() if k != 'refused'})
            return self.exit_codes.ERROR_RUNS_FAILED.format(failed=summary['failed_runs'], runs=summary['runs'],
                                                            failures='; '.join(summary['run_failures']))  # fmt: skip
        if 'fit' in self.ctx:
            node = self.ctx.fit
            if not node.is_finished_ok:
                return self.exit_codes.ERROR_FIT_FAILED.format(message=why_failed(node))
            self.out('potential', node.outputs.potential)
            self.out('active_set', node.outputs.active_set)
            self.out('training_set', self.ctx.training_set)
            self.ctx.summary.update(rmse_summary(node.outputs.report.get_dict()))
        else:
            self.out('potential', self.inputs.potential)
            self.out('active_set', self.inputs.active_set)
            self.out('training_set', self.inputs.training_set)
        summary = self.ctx.summary
        summary['training_set_size'] = len(self.outputs['training_set'])
        self.out('summary', orm.Dict(summary).store())
        self.node.base.extras.set_many({k: v for k, v in summary.items() if k != 'refused'})
        self.report(f'{summary["candidates"]} candidates, {summary["selected"]} selected, {summary["labelled"]} '
                    f'labelled, {summary["failed"]} failed, {summary.get("refused_labels", 0)} refused by hygiene; '
                    f'training set {summary["training_set_size"]}')  # fmt: skip
        return None
